"""The 3D U-Net for volumes: padded, batch-normalised, same-size output, with anisotropy-aware
convolutions and pooling planned from the voxel size as nnU-Net plans them.

A confocal or EM stack's slices are usually further apart than its pixels. Pooling along z at every
level would make z coarser still, so the first ``z_skip`` levels pool in-plane only (kernel 1×2×2)
and convolve in-plane only (1×3×3), until the in-plane spacing has grown to within 2× of the z
spacing; the deeper levels pool and convolve in all three axes (Isensee et al. 2021, nnU-Net).
"""

from __future__ import annotations

import torch
from torch import nn

from .networks import Architecture, SameSize, register_architecture

Triple = tuple[int, int, int]


def plan_z_skip(voxel_size: tuple[float, float, float] | None, depth: int) -> int:
    """How many of the first ``depth`` levels pool and convolve in-plane only: while the z spacing
    is more than twice the in-plane spacing (which each in-plane pooling doubles). 0 when the voxel
    size is unknown (isotropic is assumed)."""
    if voxel_size is None:
        return 0
    z, y, x = (float(v) for v in voxel_size)
    in_plane, skip = min(y, x), 0
    while skip < depth and z > 2 * in_plane * 2**skip:
        skip += 1
    return skip


class ConvBlock3d(nn.Sequential):
    """Two (convolution → batch norm → ReLU) of ``kernel``, padded to keep the size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple):
        padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel, padding=padding, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel, padding=padding, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet3D(SameSize, nn.Module):
    """U-Net on (N, C, Z, Y, X) volumes: ``depth`` poolings, the first ``z_skip`` in-plane only.

    Inputs must have Y and X multiples of ``size_multiple`` (2**depth) and Z a multiple of
    ``z_multiple`` (2**(depth - z_skip)); the output has the input's size.
    """

    dims = 3

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: int = 16, depth: int = 4, z_skip: int = 0):
        super().__init__()
        self.depth, self.z_skip = depth, z_skip
        kernels: list[Triple] = [(1, 3, 3) if level < z_skip else (3, 3, 3) for level in range(depth + 1)]
        pools: list[Triple] = [(1, 2, 2) if level < z_skip else (2, 2, 2) for level in range(depth)]
        channels = [width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            ConvBlock3d(in_channels if level == 0 else channels[level - 1], channels[level], kernels[level])
            for level in range(depth + 1)
        )
        self.pools = nn.ModuleList(nn.MaxPool3d(pool) for pool in pools)
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(channels[level + 1], channels[level], pools[level], stride=pools[level])
            for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            ConvBlock3d(2 * channels[level], channels[level], kernels[level]) for level in range(depth)
        )
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = self.pools[level](x)
        for level in reversed(range(self.depth)):
            x = self.decoder[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
        return self.head(x)

    @property
    def size_multiple(self) -> int:  # type: ignore[override]
        """Y and X sides must be multiples of this."""
        return 2**self.depth

    @property
    def z_multiple(self) -> int:
        """Z sides must be multiples of this."""
        return 2 ** (self.depth - self.z_skip)


register_architecture(
    Architecture(
        "unet-3d",
        "3D U-Net (volumes)",
        lambda c: UNet3D(c.in_channels, c.out_channels, c.width, c.depth, c.z_skip),
        patch_size=64,
        learning_rate=1e-3,
        dims=3,
        z_patch_size=16,
        # Three levels: in 5-minute runs on the ovule nuclei, object F1 0.57 against 0.54 (six seeds)
        # fully annotated and 0.59 against 0.42 with 5 annotated slices (docs/benchmarks.md, Quality in 3D).
        depth=3,
    )
)
