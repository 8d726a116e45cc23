"""Network architectures: the origin's valid-convolution U-Net, a padded U-Net, and pix2pix.

The names follow the course project this plugin grew from (``ContractingBlock``, ``ExpandingBlock``,
``FeatureMapBlock``, ``crop``), so readers of that code find their way around.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def crop(image: torch.Tensor, new_shape: tuple[int, ...]) -> torch.Tensor:
    """Centre-crop ``image`` (N, C, H, W) to the spatial size of ``new_shape`` (…, H', W')."""
    height, width = new_shape[-2], new_shape[-1]
    top = image.shape[-2] // 2 - height // 2
    left = image.shape[-1] // 2 - width // 2
    return image[..., top : top + height, left : left + width]


class FeatureMapBlock(nn.Module):
    """A 1×1 convolution mapping ``in_channels`` feature maps to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ContractingBlock(nn.Module):
    """Two 3×3 convolutions with ReLU, then 2×2 max-pooling; the channel count doubles.

    ``padding=0`` is the origin's valid convolution (the map shrinks by 4 pixels before pooling);
    ``padding=1`` keeps the size and adds batch normalisation.
    """

    def __init__(self, in_channels: int, padding: int = 0):
        super().__init__()
        self.convs = _double_conv(in_channels, in_channels * 2, padding)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x))


class ExpandingBlock(nn.Module):
    """Bilinear ×2 upsampling, a 2×2 convolution halving the channels, the ``crop``-ped skip
    connection concatenated, then two 3×3 convolutions with ReLU.

    With ``padding=0`` this is the origin's block (valid convolutions, the skip is cropped to fit);
    with ``padding=1`` the 2×2 convolution is padded on one side so the size doubles exactly, and
    the upsampling does not align corners, which keeps the network shift-equivariant so that tiled
    prediction reproduces a whole-image pass (the origin's ``align_corners=True`` depends on the
    size of the map).
    """

    def __init__(self, in_channels: int, padding: int = 0, dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels // 2
        self.padding = padding
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=not padding)
        self.halve = nn.Conv2d(in_channels, out_channels, kernel_size=2)
        self.convs = _double_conv(in_channels, out_channels, padding)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        if self.padding:
            x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        x = self.halve(x)
        x = torch.cat([x, crop(skip, x.shape)], dim=1)
        return self.dropout(self.convs(x))


def _double_conv(in_channels: int, out_channels: int, padding: int) -> nn.Sequential:
    """Two 3×3 convolutions with ReLU; batch-normalised when padded (the origin had no norm)."""
    norm = bool(padding)
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=padding, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


#: What a model may be, (lowest, highest) of each number: far beyond any real model, tight enough
#: that nothing absurd is built. Training refuses settings beyond them before it starts, and model
#: files are checked against them when read (io/schema.py), so every model trained can be loaded.
MODEL_LIMITS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 256),
    "out_channels": (1, 4096),
    "width": (1, 1024),
    "depth": (1, 10),
    "patch_size": (2, 16384),  # the smallest a padded U-Net of depth 1 trains on a 2×2 image
    "binning": (1, 8),  # a 3D model's in-plane binning of its volumes (training.binning)
}
#: How the limits' names read in a message about training settings or data.
_LIMIT_NAMES = {
    "in_channels": "the number of image channels",
    "out_channels": "the number of classes",
    "width": "width",
    "depth": "depth",
    "patch_size": "patch size",
    "binning": "binning (1: none)",
}


def check_limit(name: str, value: int) -> None:
    """Raise ``InputError`` if ``value`` is outside ``MODEL_LIMITS[name]``."""
    low, high = MODEL_LIMITS[name]
    if not low <= int(value) <= high:
        raise InputError(f"{_LIMIT_NAMES[name]} must be from {low} to {high}, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in model files (within ``MODEL_LIMITS``)."""

    architecture: str = "unet"
    in_channels: int = 1
    out_channels: int = 2
    width: int = 16
    depth: int = 4
    z_skip: int = 0  # 3D networks: the first levels that pool in-plane only (see unet3d.plan_z_skip)

    def __post_init__(self) -> None:
        get_architecture(self.architecture)
        for name in ("in_channels", "out_channels", "width", "depth"):
            check_limit(name, getattr(self, name))  # InputError, a ValueError
        if isinstance(self.z_skip, bool) or not isinstance(self.z_skip, int) or not 0 <= self.z_skip <= self.depth:
            raise InputError(f"z_skip must be a whole number from 0 to the depth ({self.depth}), got {self.z_skip!r}")

    @property
    def dims(self) -> int:
        """2 for networks of slices, 3 for networks of volumes."""
        return get_architecture(self.architecture).dims

    def to_dict(self) -> dict:
        fields = asdict(self)
        if not fields["z_skip"]:
            del fields["z_skip"]  # 2D model files stay as they were
        return fields


class UNet(nn.Module):
    """U-Net: ``FeatureMapBlock`` → ``depth`` ``ContractingBlock``s → ``depth`` ``ExpandingBlock``s
    (each fed the matching skip connection) → ``FeatureMapBlock``.

    ``padded=False`` is the origin's classic U-Net (valid convolutions, no normalisation): with
    ``depth=4`` a 512×512 input gives a 373×373 output (256 → 117). ``padded=True`` keeps the size,
    adds batch normalisation and takes any input whose sides are multiples of ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        hidden_channels: int = 16,
        depth: int = 4,
        padded: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.depth = depth
        self.padded = padded
        padding = 1 if padded else 0
        self.upfeature = FeatureMapBlock(in_channels, hidden_channels)
        self.contract = nn.ModuleList(ContractingBlock(hidden_channels * 2**i, padding) for i in range(depth))
        # pix2pix puts dropout in the three deepest decoder blocks only.
        self.expand = nn.ModuleList(
            ExpandingBlock(hidden_channels * 2 ** (depth - i), padding, dropout=dropout if i < 3 else 0.0)
            for i in range(depth)
        )
        self.downfeature = FeatureMapBlock(hidden_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upfeature(x)
        skips = [x]
        for block in self.contract:
            x = block(x)
            skips.append(x)
        skips.pop()  # the deepest map is the bottleneck itself, not a skip
        for block in self.expand:
            x = block(x, skips.pop())
        return self.downfeature(x)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (1 for the valid U-Net, which crops instead)."""
        return 2**self.depth if self.padded else 1

    def output_size(self, input_size: int) -> int:
        """Side of the output for an input of side ``input_size``; 0 if the input is too small."""
        if self.padded:
            return input_size
        size, skips = input_size, []
        for _ in range(self.depth):
            skips.append(size)
            size = (size - 4) // 2
            if size < 1:
                return 0
        for skip in reversed(skips):
            size = size * 2 - 1
            if size > skip or size - 4 < 1:
                return 0
            size -= 4
        return size

    def output_offset(self, input_size: int) -> int:
        """Row/column of the input under output pixel 0, as ``crop`` centres the training target."""
        return input_size // 2 - self.output_size(input_size) // 2

    def min_input_size(self) -> int:
        """The smallest input side this network produces an output for."""
        size = self.size_multiple
        while self.output_size(size) < 1:
            size += 1
        return size


class Generator(UNet):
    """The pix2pix generator: a padded U-Net with dropout in its deepest decoder blocks."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, hidden_channels: int = 16, depth: int = 4):
        super().__init__(in_channels, out_channels, hidden_channels, depth, padded=True, dropout=0.5)


class Discriminator(nn.Module):
    """PatchGAN discriminator: judges overlapping patches of (condition, target) pairs as real or fake.

    Four 4×4 stride-2 convolutions (the 70×70 receptive field of Isola et al. 2017 at
    ``hidden_channels=64``), then a ``FeatureMapBlock`` giving one logit per patch.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, stride in enumerate((2, 2, 2, 1)):
            out = hidden_channels * 2**i
            layers.append(nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=i == 0))
            if i:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.patch_logits = FeatureMapBlock(channels, 1)

    def forward(self, condition: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.patch_logits(self.features(torch.cat([condition, target], dim=1)))


# ----------------------------------------------------------------------------- the registry


@runtime_checkable
class SizeContract(Protocol):
    """What tiling and patch sampling need to know about a network's input and output sizes.

    A same-size network (``padded``) maps an input of side n to an output of side n and takes sides
    that are multiples of ``size_multiple``; a valid-convolution network maps a larger input to a
    smaller output whose pixel 0 lies under input pixel ``output_offset``.
    """

    @property
    def padded(self) -> bool: ...

    @property
    def size_multiple(self) -> int: ...

    def output_size(self, input_size: int) -> int: ...

    def output_offset(self, input_size: int) -> int: ...

    def min_input_size(self) -> int: ...


class SameSize:
    """The size contract of a network whose output has its input's size, for inputs whose sides
    are multiples of ``size_multiple``: mix it into an ``nn.Module`` to register it."""

    padded = True
    size_multiple = 1

    def output_size(self, input_size: int) -> int:
        return input_size

    def output_offset(self, input_size: int) -> int:
        return 0

    def min_input_size(self) -> int:
        return self.size_multiple


class SegmentationNetwork(SizeContract, Protocol):
    """A network the engine trains and tiles: an ``nn.Module`` mapping (N, C, H, W) images to
    (N, classes, H', W') logits, with the size contract."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Architecture:
    """One network the plugin offers, with the defaults that suit it.

    ``build`` makes the segmentation network (for pix2pix: the generator) from a ``ModelConfig``;
    ``build_discriminator``, when given, makes it an adversarial (pix2pix) architecture.
    """

    name: str
    label: str
    build: Callable[[ModelConfig], nn.Module]
    patch_size: int = 128
    learning_rate: float = 3e-4  # steadier validation than 1e-3 for the same end point (docs/benchmarks.md)
    betas: tuple[float, float] = (0.9, 0.999)
    build_discriminator: Callable[[ModelConfig], nn.Module] | None = None
    dims: int = 2  # 3: the network takes (N, C, Z, Y, X) volumes
    z_patch_size: int = 0  # 3D: the training patch's depth (slices)
    depth: int = 4  # pooling levels when the training settings leave them open

    @property
    def adversarial(self) -> bool:
        return self.build_discriminator is not None


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    """Offer ``architecture`` everywhere: training, the Train widget, the command line, model files."""
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name``; ``InputError`` listing the choices if none is."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise InputError(f"model must be one of {tuple(ARCHITECTURES)}, got {name!r}") from None


def build_model(config: ModelConfig) -> nn.Module:
    """The segmentation network (for pix2pix: the generator) described by ``config``."""
    return get_architecture(config.architecture).build(config)


def build_discriminator(config: ModelConfig) -> nn.Module:
    """The discriminator of an adversarial ``config``'s architecture."""
    architecture = get_architecture(config.architecture)
    if architecture.build_discriminator is None:
        raise InputError(f"the {architecture.label} has no discriminator")
    return architecture.build_discriminator(config)


register_architecture(
    Architecture(
        "unet",
        "U-Net (recommended)",
        lambda c: UNet(c.in_channels, c.out_channels, c.width, c.depth, padded=True),
    )
)
register_architecture(
    Architecture(
        "seed-unet",
        "Seed U-Net (original, valid convolutions)",
        lambda c: UNet(c.in_channels, c.out_channels, c.width, c.depth, padded=False),
        patch_size=256,  # its output is 117² for a 256² input
    )
)
register_architecture(
    Architecture(
        "pix2pix",
        "pix2pix (U-Net + PatchGAN)",
        lambda c: Generator(c.in_channels, c.out_channels, c.width, c.depth),
        learning_rate=2e-4,
        betas=(0.5, 0.999),  # Isola et al. 2017
        # The PatchGAN judges (image channels + class maps).
        build_discriminator=lambda c: Discriminator(c.in_channels + c.out_channels, c.width),
    )
)
