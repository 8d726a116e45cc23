"""Cutting a slice into overlapping tiles for a network, and blending them back without seams.

The padded U-Net maps a tile to the same size; the valid (seed) U-Net maps an input tile to a
smaller output tile, the rest being context. Weights fall smoothly to zero before an edge shared
with a neighbouring tile, so blended tiles reproduce a whole-image pass of the padded U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from ..errors import InputError
from ..models.networks import UNet
from ..models.trained import TrainedModel


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` not below ``value``."""
    return -(-value // multiple) * multiple


def mirrored_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Positions ``start`` … ``stop - 1`` of an axis of ``size``, mirrored at its ends like
    ``numpy.pad(mode="reflect")`` (…2 1 0 1 2…); all 0 for an axis of one."""
    positions = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    positions = np.abs(positions) % period
    return np.where(positions >= size, period - positions, positions)


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of one slice go, for a network mapping an input tile to an output tile.

    ``out_h × out_w`` output pixels come from an ``in_h × in_w`` input window whose pixel
    (``offset``, ``offset``) lies under output pixel (0, 0); window pixels past the slice's edge are
    mirrored. Consecutive tiles overlap by ``overlap`` output pixels.
    """

    height: int
    width: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    offset: int
    overlap: int

    def starts(self, size: int, out: int) -> list[int]:
        stride = out - self.overlap
        count = 1 if size <= out else -(-(size - out) // stride) + 1
        return [i * stride for i in range(count)]

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.starts(self.height, self.out_h) for x in self.starts(self.width, self.out_w)]

    def borders(self, y: int, x: int) -> tuple[bool, bool, bool, bool]:
        """Which sides of tile (y, x) lie on the slice's edge: top, bottom, left, right.
        Tiles with the same borders have the same weights."""
        return (
            y == 0,
            y == self.starts(self.height, self.out_h)[-1],
            x == 0,
            x == self.starts(self.width, self.out_w)[-1],
        )

    def weights(self, y: int, x: int) -> np.ndarray:
        """Blending weights (out_h, out_w): 1 inside, ramping to 0 before edges shared with a neighbour."""
        top, bottom, left, right = self.borders(y, x)
        wy = self._ramp(self.out_h, first=top, last=bottom)
        wx = self._ramp(self.out_w, first=left, last=right)
        return np.outer(wy, wx).astype(np.float32)

    def _ramp(self, size: int, first: bool, last: bool) -> np.ndarray:
        weights = np.ones(size, dtype=np.float64)
        if self.overlap:
            # The outer quarter of the overlap gets no weight (zero-padding effects live there);
            # the middle half ramps as sin², whose mirror image sums with it to exactly 1.
            dead = self.overlap // 4
            length = self.overlap - 2 * dead
            ramp = np.zeros(self.overlap)
            ramp[dead : dead + length] = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
            ramp[dead + length :] = 1.0
            if not first:
                weights[: self.overlap] *= ramp
            if not last:
                weights[-self.overlap :] *= ramp[::-1]
        return weights


def tile_layout(model: TrainedModel, height: int, width: int, tile_size: int | None, overlap: int | None) -> TileLayout:
    """Choose tiles for a slice: whole-slice when it fits, else the fewest overlapping tiles.

    For the padded U-Net, ``tile_size`` is the largest output tile (default: four training patches,
    at least 512) and is rounded to the network's size multiple; a slice that needs several tiles
    is split into equal ones, so no tile reaches far past the slice's edge. For the valid (seed)
    U-Net it is the input tile, of which a border is context only.
    """
    network = model.sizes
    if network.padded:
        multiple = network.size_multiple
        tile_size = int(tile_size or max(4 * model.patch_size, 512))
        tile_size = max(multiple, tile_size // multiple * multiple)
        overlap = _overlap(overlap, tile_size, default=max(multiple, tile_size // 8), multiple=multiple)
        out_h = _even_tile(height, tile_size, overlap, multiple)
        out_w = _even_tile(width, tile_size, overlap, multiple)
        overlap = _overlap(overlap, min(out_h, out_w), default=overlap, multiple=multiple)
        return TileLayout(height, width, out_h, out_w, out_h, out_w, 0, overlap)
    chosen = tile_size is not None
    tile_size = int(tile_size or max(2 * model.patch_size, 256))
    minimum = network.min_input_size()
    if tile_size < minimum:
        raise InputError(f"tile size {tile_size} is too small for the seed U-Net; use at least {minimum}")
    if not chosen:
        tile_size = _cheapest_seed_tile(cast(UNet, network), height, width, tile_size, minimum)
    out = network.output_size(tile_size)
    overlap = _overlap(overlap, out, default=out // 8, multiple=1)
    return TileLayout(height, width, tile_size, tile_size, out, out, network.output_offset(tile_size), overlap)


def _cheapest_seed_tile(network: UNet, height: int, width: int, tile_size: int, minimum: int) -> int:
    """The input tile, from ``minimum`` to twice ``tile_size`` in steps keeping its pooling alignment,
    that feeds the valid U-Net the fewest pixels for this slice (context borders included)."""
    step = network.size_multiple if network.padded else 2**network.depth
    sizes = range(tile_size - (tile_size - minimum) // step * step, 2 * tile_size + 1, step)

    def cost(size: int) -> int:
        out = network.output_size(size)
        layout = TileLayout(height, width, size, size, out, out, 0, _overlap(None, out, out // 8, 1))
        return len(layout.tiles) * size * size

    return min(sizes, key=lambda size: (cost(size), size))


def _even_tile(size: int, tile_size: int, overlap: int, multiple: int) -> int:
    """The side of the fewest equal tiles (at most ``tile_size``, overlapping by ``overlap``) covering ``size``."""
    if size <= tile_size:
        return round_up(size, multiple)
    count = -(-(size - overlap) // (tile_size - overlap))
    side = -(-(size + (count - 1) * overlap) // count)
    return min(tile_size, round_up(side, multiple))


def _overlap(requested: int | None, out: int, default: int, multiple: int) -> int:
    overlap = default if requested is None else int(requested)
    if overlap < 0:
        raise InputError(f"overlap must not be negative, got {overlap}")
    # Tile starts stay on the network's pooling grid, and no pixel is under more than two tiles.
    return min(overlap, out // 2) // multiple * multiple
