"""Train a U-Net or pix2pix network on annotated images; predict label layers."""

__version__ = "0.1.0"
