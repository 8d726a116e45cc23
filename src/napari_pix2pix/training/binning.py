"""In-plane binning of anisotropic stacks before a 3D network (the network's working voxel size).

A confocal stack's slices are often two or more pixels apart (the ovule nuclei: 0.284 µm slices of
0.128 µm pixels). A 3D network trained on it as it is spends most of its time on the finest in-plane
level and sees little of each nucleus along z. Binned 2× in y and x to 0.284 × 0.255 × 0.255 µm,
nearly isotropic, a patch holds four times the tissue and an epoch costs a quarter: in 5-minute
runs on the ovule nuclei Dice rose 0.77 → 0.80 and the adapted Rand error fell 0.10 → 0.05–0.07
(three seeds; docs/benchmarks.md, Quality in 3D). This is
nnU-Net's target spacing and PlantSeg's rescaling to the voxel size a model learned: the model keeps
the binned voxel size, and a volume is rescaled to it at prediction and its result scaled back.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.trained import TrainedModel

#: At most this binning is chosen automatically (the only one measured; the objects' size bounds it too).
MAX_BINNING = 2
#: Binning keeps the objects' typical diameter at least this many (binned) pixels.
MIN_BINNED_OBJECT = 8.0
#: A binned pixel may be this much wider than the slice spacing (1.9× pixels bin 2×).
SPACING_TOLERANCE = 1.1


def plan_binning(voxel_size: tuple[float, float, float] | None, object_size: float | None) -> int:
    """How many times to bin a stack's y and x for a 3D network: the largest whole number (at most
    ``MAX_BINNING``) that keeps the binned pixels no wider than the slice spacing (within
    ``SPACING_TOLERANCE``) and the objects at least ``MIN_BINNED_OBJECT`` pixels across; 1 (no binning)
    when the voxel size or the objects' size is unknown."""
    if voxel_size is None or object_size is None:
        return 1
    z, y, x = voxel_size
    by_spacing = math.floor(z / max(y, x) * SPACING_TOLERANCE)
    by_objects = math.floor(object_size / MIN_BINNED_OBJECT)
    return max(1, min(MAX_BINNING, by_spacing, by_objects))


def binned_voxel_size(voxel_size: tuple[float, float, float], binning: int) -> tuple[float, float, float]:
    """The voxel size after binning y and x ``binning`` times."""
    z, y, x = voxel_size
    return (z, y * binning, x * binning)


def binned_pixel_size(pixel_size: tuple[float, float] | None, binning: int) -> tuple[float, float] | None:
    """The pixel size after binning ``binning`` times (None stays None)."""
    return None if pixel_size is None else (pixel_size[0] * binning, pixel_size[1] * binning)


def network_voxel_size(
    voxel_size: tuple[float, float, float] | None, binning: int, base: TrainedModel | None
) -> tuple[float, float, float] | None:
    """The voxel size a 3D network learns: the stacks' binned, else the model it builds on's."""
    if voxel_size is not None:
        return binned_voxel_size(voxel_size, binning)
    return base.voxel_size if base is not None else None


def binning_note(binning: int, voxel_size: tuple[float, float, float] | None) -> str:
    """What a run's start line says of its binning ('' for none)."""
    if binning == 1:
        return ""
    size = f" to voxels of {' × '.join(f'{v:.3g}' for v in voxel_size)}" if voxel_size is not None else ""
    return f"; y and x binned {binning}×{size} (the model predicts at this size and scales back)"


def _padded(array: np.ndarray, binning: int, axes: tuple[int, int]) -> np.ndarray:
    """``array`` with its ``axes`` padded (edge values) up to multiples of ``binning``."""
    pad = [(0, 0)] * array.ndim
    for axis in axes:
        pad[axis] = (0, -array.shape[axis] % binning)
    return np.pad(array, pad, mode="edge") if any(p[1] for p in pad) else array


def bin_image(image: np.ndarray, binning: int) -> np.ndarray:
    """A (C, Z, Y, X) float32 image's y and x binned (the mean of each ``binning``² block; the last
    row and column repeated to fill a partial block)."""
    if binning == 1:
        return image
    padded = _padded(image, binning, (2, 3))
    c, z, h, w = padded.shape
    blocks = padded.reshape(c, z, h // binning, binning, w // binning, binning)
    return np.ascontiguousarray(blocks.mean(axis=(3, 5), dtype=np.float32))


def bin_labels(labels: np.ndarray, binning: int, zero_is_unannotated: bool = False) -> np.ndarray:
    """A (Z, Y, X) label array's y and x binned: each ``binning``² block takes its most frequent value
    (the first of a tie, in row order); with ``zero_is_unannotated`` (scribbles) a block takes its most
    frequent annotated value, and stays 0 only when nothing in it is annotated."""
    if binning == 1:
        return labels
    padded = _padded(labels, binning, (1, 2))
    z, h, w = padded.shape
    blocks = padded.reshape(z, h // binning, binning, w // binning, binning).transpose(0, 1, 3, 2, 4)
    values = blocks.reshape(z, h // binning, w // binning, binning * binning)
    counts = np.zeros(values.shape, np.int32)
    for i in range(values.shape[-1]):  # how often each of the block's values occurs in it
        counts[..., i] = (values == values[..., i : i + 1]).sum(axis=-1)
    if zero_is_unannotated:
        counts[values == 0] = 0
    chosen = np.take_along_axis(values, counts.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(chosen)
