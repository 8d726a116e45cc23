"""The networks (the seed's ``ContractingBlock`` … ``UNet``, ``Generator``, ``Discriminator``, and
``UNet3D`` for volumes), the
architecture registry with each network's size contract, and ``TrainedModel``: a network with its
classes, intensity normalisation and history."""

from .networks import (
    ARCHITECTURES,
    Architecture,
    ContractingBlock,
    Discriminator,
    ExpandingBlock,
    FeatureMapBlock,
    Generator,
    ModelConfig,
    SameSize,
    SegmentationNetwork,
    SizeContract,
    UNet,
    build_discriminator,
    build_model,
    crop,
    get_architecture,
    register_architecture,
)
from .normalisation import Normalisation
from .trained import TrainedModel
from .unet3d import UNet3D, plan_z_skip  # registers the 3D U-Net

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ContractingBlock",
    "Discriminator",
    "ExpandingBlock",
    "FeatureMapBlock",
    "Generator",
    "ModelConfig",
    "Normalisation",
    "SameSize",
    "SegmentationNetwork",
    "SizeContract",
    "TrainedModel",
    "UNet",
    "UNet3D",
    "build_discriminator",
    "build_model",
    "crop",
    "get_architecture",
    "plan_z_skip",
    "register_architecture",
]
