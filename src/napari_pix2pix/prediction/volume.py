"""Prediction with a 3D network: a volume in blocks with a halo, streamed slab by slab along z.

A slab of ``step`` slices is predicted from the slices around it (``halo`` more on each side, the
volume mirrored at its ends), cut in-plane into overlapping blocks whose halo is dropped, so every
voxel comes from the centre of a block and the result matches a whole-volume pass (tested). Only
the slab being predicted is held: slices are read from a lazy volume (a big TIFF's pages, dask,
OME-Zarr) as the slab needs them, and each finished slice is handed on in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch

from ..checks import check_finite, check_numeric
from ..devices import autocast, resolve_device
from ..errors import Cancelled
from ..models.trained import TrainedModel
from ..models.unet3d import UNet3D
from .reading import VolumeGeometry
from .settings import PredictionSettings
from .tiling import mirrored_indices, round_up

IN_PLANE_HALO = 16  # pixels dropped at each in-plane side of a block
Z_HALO = 4  # slices dropped above and below a slab
DEFAULT_BLOCK = 128  # in-plane block side before its halo is added
SLAB_STEPS = 2  # a slab's centre is this many z multiples of the network deep (at least)


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut: in-plane blocks of ``block`` (input side) keeping ``block - 2·halo``,
    z slabs of ``slab`` input slices keeping ``slab - 2·z_halo``."""

    block: int
    halo: int
    slab: int
    z_halo: int

    @property
    def keep(self) -> int:
        return self.block - 2 * self.halo

    @property
    def z_keep(self) -> int:
        return self.slab - 2 * self.z_halo


def block_plan(model: TrainedModel, geometry: VolumeGeometry, settings: PredictionSettings) -> BlockPlan:
    """Blocks of the network's multiples: in-plane ``settings.tile_size`` (default 128, no more than
    the slice needs) plus the halo, z slabs of a few z multiples plus the z halo."""
    network = cast(UNet3D, model.network)
    halo = settings.overlap // 2 if settings.overlap is not None else IN_PLANE_HALO
    keep = min(settings.tile_size or DEFAULT_BLOCK, max(geometry.height, geometry.width))
    block = round_up(keep + 2 * halo, network.size_multiple)
    z_multiple = network.z_multiple
    z_keep = min(geometry.n_slices, SLAB_STEPS * z_multiple)
    slab = round_up(z_keep + 2 * Z_HALO, z_multiple)
    return BlockPlan(block, halo, slab, Z_HALO)


def read_slab(image: Any, geometry: VolumeGeometry, model: TrainedModel, start: int, stop: int) -> np.ndarray:
    """Slices ``start:stop`` (mirrored past the volume's ends) as normalised float32 (C, Z, Y, X)."""
    indices = mirrored_indices(start, stop, geometry.n_slices)
    low, high = int(indices.min()), int(indices.max()) + 1
    planes = np.asarray(image[low:high] if geometry.is_stack else np.asarray(image)[None])
    check_numeric(planes.dtype)
    for offset, plane in enumerate(planes):
        check_finite(plane, f"slice {low + offset}")
    if geometry.channels == 1:
        planes = planes[..., None]
    normalised = model.normalisation.apply(planes[indices - low])  # mirrored in the raw type, then one float32 copy
    return np.ascontiguousarray(np.moveaxis(normalised, -1, 0))


def _flips(tta: bool) -> list[tuple[int, ...]]:
    """The axis flips averaged over: none, or all 8 combinations of z, y and x (test-time augmentation)."""
    if not tta:
        return [()]
    axes = (2, 3, 4)
    return [tuple(a for bit, a in enumerate(axes) if mask >> bit & 1) for mask in range(8)]


def _probabilities(network: torch.nn.Module, batch: torch.Tensor, tta: bool, device: torch.device) -> torch.Tensor:
    """Softmax of the network over a batch of blocks, averaged over flips when ``tta``."""
    total = None
    with torch.inference_mode(), autocast(device):
        for flip in _flips(tta):
            inputs = batch.flip(flip) if flip else batch
            out = torch.softmax(network(inputs).float(), dim=1)
            out = out.flip(flip) if flip else out
            total = out if total is None else total + out
    assert total is not None
    return total / len(_flips(tta))


def predict_slab(
    model: TrainedModel, slab: np.ndarray, plan: BlockPlan, settings: PredictionSettings, device: torch.device
) -> np.ndarray:
    """Class probabilities (K, z_keep, Y, X) of the centre of a normalised slab (C, slab, Y, X)."""
    _, _, height, width = slab.shape
    out = np.empty((model.encoding.n_classes, plan.z_keep, height, width), np.float32)
    tiles = [(y, x) for y in range(0, height, plan.keep) for x in range(0, width, plan.keep)]
    batch_size = max(1, settings.batch_size or 2)
    for first in range(0, len(tiles), batch_size):
        chosen = tiles[first : first + batch_size]
        windows = [  # one gather of the block (not a whole-width strip first)
            slab[
                np.ix_(
                    np.arange(slab.shape[0]),
                    np.arange(slab.shape[1]),
                    mirrored_indices(y - plan.halo, y - plan.halo + plan.block, height),
                    mirrored_indices(x - plan.halo, x - plan.halo + plan.block, width),
                )
            ]
            for y, x in chosen
        ]
        batch = torch.from_numpy(np.stack(windows)).to(device)
        probabilities = _probabilities(model.network, batch, settings.tta, device).cpu().numpy()
        for (y, x), block in zip(chosen, probabilities):
            h, w = min(plan.keep, height - y), min(plan.keep, width - x)
            core = block[
                :, plan.z_halo : plan.z_halo + plan.z_keep, plan.halo : plan.halo + h, plan.halo : plan.halo + w
            ]
            out[:, :, y : y + h, x : x + w] = core
    return out


def iter_volume_probabilities(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    stop: threading.Event | None = None,
    slices: range | None = None,
    in_plane: tuple[float, float] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities (K, Y, X) of each slice of a volume (or of ``slices`` only), in order, from
    a 3D network. A range is predicted with the slabs of the whole volume's pass (the first one on
    their grid, ``z_grid``), so each of its slices is exactly what the whole-volume pass gives; only
    the slices those slabs need are read. With ``in_plane`` factors (y, x) each slab is scaled in-plane
    as it is read (area: a block mean for a whole fraction, as a binned model learned) and each
    slice's probabilities scaled back (bilinear): memory stays one slab, whatever the volume's size."""
    wanted = slices if slices is not None else range(geometry.n_slices)
    first = wanted.start - wanted.start % z_grid(model, geometry, settings)
    own = (geometry.height, geometry.width)
    scaled = own if in_plane is None else (max(1, round(own[0] * in_plane[0])), max(1, round(own[1] * in_plane[1])))

    def read(start: int, stop_: int) -> np.ndarray:
        slab = read_slab(image, geometry, model, start, stop_)
        return slab if scaled == own else _planes_resized(slab.swapaxes(0, 1), scaled, "area").swapaxes(0, 1)

    for index, probabilities in iter_slab_probabilities(
        model,
        read,
        replace(geometry, height=scaled[0], width=scaled[1]),
        settings,
        slices=range(first, wanted.stop),
        stop=stop,
    ):
        if index >= wanted.start:
            yield index, probabilities if scaled == own else _planes_resized(probabilities[None], own, "bilinear")[0]


def _planes_resized(planes: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """(N, C, Y, X) float32 planes resized in-plane to ``shape``."""
    tensor = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))
    options = {"align_corners": False} if mode == "bilinear" else {}
    return np.ascontiguousarray(torch.nn.functional.interpolate(tensor, size=shape, mode=mode, **options).numpy())


def linear_positions(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n_out`` slices resampled linearly from ``n_in`` (as torch's ``interpolate`` with
    ``align_corners=False``): the source slice at or below it and the weight of the one above."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    below = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    return below, (source - below).astype(np.float32)


class ZResampled:
    """A stack's slices resampled linearly along z to ``n_slices``, read lazily: reading slices
    ``start:stop`` reads only the source slices they lie between (float32, channels kept)."""

    def __init__(self, image: Any, n_source: int, n_slices: int):
        self.image, self.n_source = image, n_source
        self.below, self.weight = linear_positions(n_slices, n_source)
        self.shape = (n_slices, *image.shape[1:])
        self.ndim, self.dtype = len(self.shape), np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        below, weight = self.below[start:stop], self.weight[start:stop]
        above = np.minimum(below + 1, self.n_source - 1)
        if not below.size:
            return np.zeros((0, *self.shape[1:]), np.float32)
        first = int(below.min())
        source = np.asarray(self.image[first : int(above.max()) + 1])
        check_numeric(source.dtype)
        weight = weight.reshape(-1, *([1] * (source.ndim - 1)))
        return (1 - weight) * source[below - first].astype(np.float32) + weight * source[above - first]


def rescaled_volume_probabilities(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    factors: tuple[float, ...],
    stop: threading.Event | None = None,
    slices: range | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``iter_volume_probabilities`` of the volume rescaled by ``factors`` (z, y, x) to the model's
    voxel size, and each slice's class probabilities scaled back to the volume's own grid (of every
    slice, or of ``slices`` only, each exactly as the whole volume's pass gives it), streamed: along z
    linearly (``ZResampled`` on the way in, the two nearest predicted slices on the way out), in-plane
    as ``iter_volume_probabilities`` does. Memory stays one slab, whatever the volume's size."""
    wanted = slices if slices is not None else range(geometry.n_slices)
    depth = max(1, round(geometry.n_slices * factors[0])) if geometry.is_stack else 1
    in_plane = (factors[1], factors[2])
    if depth == geometry.n_slices:
        yield from iter_volume_probabilities(model, image, geometry, settings, stop, wanted, in_plane)
        return
    if not wanted:
        return
    below, weight = linear_positions(geometry.n_slices, depth)
    needed = range(int(below[wanted.start]), min(int(below[wanted.stop - 1]) + 1, depth - 1) + 1)
    source = ZResampled(image, geometry.n_slices, depth)
    planes = iter_volume_probabilities(
        model, source, replace(geometry, n_slices=depth), settings, stop, needed, in_plane
    )
    kept: dict[int, np.ndarray] = {}
    index = wanted.start
    for scaled, probabilities in planes:
        kept[scaled] = probabilities
        while index < wanted.stop and min(below[index] + 1, depth - 1) <= scaled:
            low, high = kept[int(below[index])], kept[min(int(below[index]) + 1, depth - 1)]
            yield index, (1 - weight[index]) * low + weight[index] * high
            index += 1
        for done in [k for k in kept if index >= wanted.stop or k < below[index]]:
            del kept[done]


def z_grid(model: TrainedModel, geometry: VolumeGeometry, settings: PredictionSettings) -> int:
    """The whole-volume pass predicts slabs of this many slices, from slice 0: a range of slices
    starting on a multiple of it is predicted without recomputing a slab another range shares."""
    return block_plan(model, geometry, settings).z_keep


def iter_slab_probabilities(
    model: TrainedModel,
    read: Callable[[int, int], np.ndarray],
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    slices: range | None = None,
    stop: threading.Event | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities (K, Y, X) of ``slices`` (default: all) in order, ``read(start, stop)``
    giving the normalised (C, Z, Y, X) slab of those slices, mirrored past the volume's ends."""
    device = resolve_device(settings.device) if isinstance(settings.device, str) else settings.device
    model.network.to(device).eval()
    plan = block_plan(model, geometry, settings)
    wanted = slices if slices is not None else range(geometry.n_slices)
    for start in range(wanted.start, wanted.stop, plan.z_keep):
        if stop is not None and stop.is_set():
            raise Cancelled("prediction cancelled")
        slab = read(start - plan.z_halo, start - plan.z_halo + plan.slab)
        probabilities = predict_slab(model, slab, plan, settings, device)
        del slab  # not kept while the next slab is read
        for offset in range(min(plan.z_keep, wanted.stop - start)):
            # A copy, not a view: a caller holding the last slice would keep the whole slab's
            # probabilities alive while the next slab is read and predicted (twice the memory).
            yield start + offset, probabilities[:, offset].copy()
        del probabilities


def mirrored_slab(volume: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Slices ``start:stop`` of a normalised (C, Z, Y, X) volume, mirrored past its ends."""
    return volume[:, mirrored_indices(start, stop, volume.shape[1])]
