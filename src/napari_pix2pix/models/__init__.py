"""The networks (the seed's ``ContractingBlock`` … ``UNet``, ``Generator``, ``Discriminator``), the
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
    "build_discriminator",
    "build_model",
    "crop",
    "get_architecture",
    "register_architecture",
]
