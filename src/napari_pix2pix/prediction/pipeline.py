"""Applying a trained model: tiled, blended, batched prediction that streams slice by slice.

A volume is read one slice at a time (so a lazily loaded dask array larger than memory works),
cut into overlapping tiles that are batched across slices, and stitched back with smooth weights
that fall to zero before a tile's edge, so no seam shows and a padded U-Net gives the result of a
whole-image pass. Each finished slice is turned into the requested output (see ``outputs.py``)
and handed on.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch

from ..checks import check_finite, check_numeric, check_pixel_size, image_layout
from ..errors import Cancelled, InputError
from ..labels.outputs import get_output
from ..labels.postprocess import Cleanup, renumber_instances, typical_object_size
from ..models.trained import TrainedModel
from .streaming import stream_slices

DEFAULT_CLEANUP = Cleanup()
AUTO_SIZE = "auto"
SIZE_TOLERANCE = 1.25  # object sizes within this factor of the trained size are predicted as they are
SIZE_AGREES = 1.1  # the size estimate refines until the measured size is within this factor (docs §10)
HOST_WORKERS = 8  # at most; post-processing a 512² slice takes 50–150 ms of one core
T = TypeVar("T")
R = TypeVar("R")
DEFAULT_TTA = False  # see the README: on 2 CPU cores its gain is not worth 8x the time

__all__ = ["Cancelled", "SliceResult", "VolumeGeometry", "iter_predict", "iter_probabilities", "predict"]


@dataclass(frozen=True)
class VolumeGeometry:
    """How an image is read: number of slices, slice shape and where the channels are."""

    n_slices: int
    height: int
    width: int
    channels: int
    is_stack: bool

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        yx = (self.height, self.width)
        return (self.n_slices, *yx) if self.is_stack else yx


def volume_geometry(shape: tuple[int, ...], in_channels: int) -> VolumeGeometry:
    """Read the geometry from the shape alone, so a lazy array is not loaded."""
    spatial = image_layout(shape, in_channels=in_channels).spatial_shape
    is_stack = len(spatial) == 3
    return VolumeGeometry(spatial[0] if is_stack else 1, spatial[-2], spatial[-1], in_channels, is_stack)


SAMPLE_SLICES = 16  # slices read to find a volume's own percentiles (per-image normalisation)


def for_this_image(model: TrainedModel, image, geometry: VolumeGeometry) -> TrainedModel:
    """``model`` with the fixed normalisation for ``image``: under the per-image rule, the image's
    own percentiles, from up to ``SAMPLE_SLICES`` evenly spaced slices (a lazy volume is not read whole)."""
    if not model.normalisation.per_image:
        return model
    picks = np.unique(np.linspace(0, geometry.n_slices - 1, min(SAMPLE_SLICES, geometry.n_slices)).round().astype(int))
    planes = [np.asarray(image[i] if geometry.is_stack else image) for i in picks]
    for index, plane in zip(picks, planes):
        check_numeric(plane.dtype)
        check_finite(plane, f"slice {index}" if geometry.is_stack else "the image")
    sample = np.stack([p if geometry.channels > 1 else p[..., None] for p in planes])
    return replace(model, normalisation=model.normalisation.for_image(sample))


def read_slice(image, index: int, geometry: VolumeGeometry, model: TrainedModel) -> np.ndarray:
    """Slice ``index`` as normalised float32 (C, H, W); only this slice is loaded from a lazy array."""
    plane = np.asarray(image[index] if geometry.is_stack else image)
    check_numeric(plane.dtype)
    check_finite(plane, f"slice {index}" if geometry.is_stack else "the image")
    if geometry.channels == 1:
        plane = plane[..., None]
    return np.ascontiguousarray(np.moveaxis(model.normalisation.apply(plane), -1, 0))


# ----------------------------------------------------------------------------- the public functions


@dataclass
class SliceResult:
    """One finished slice: its index, the output array, and how many slices are done."""

    index: int
    data: np.ndarray
    done: int
    total: int


def _read_slices(model: TrainedModel, image, geometry: VolumeGeometry) -> Iterator[tuple[int, np.ndarray]]:
    for index in range(geometry.n_slices):
        yield index, read_slice(image, index, geometry, model)


def iter_probabilities(model: TrainedModel, image, **options) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities (K, H, W) of each slice of ``image``, in order; see ``iter_predict``
    for ``image`` and the options."""
    geometry = volume_geometry(image.shape, model.config.in_channels)
    model = for_this_image(model, image, geometry)
    yield from stream_slices(model, _read_slices(model, image, geometry), geometry.height, geometry.width, **options)


def iter_predict(
    model: TrainedModel,
    image,
    output: str = "labels",
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    stop: threading.Event | None = None,
    link_slices: bool = True,
    tta: bool = DEFAULT_TTA,
    cleanup: Cleanup | None = DEFAULT_CLEANUP,
    object_size: float | str | None = AUTO_SIZE,
    pixel_size: tuple[float, float] | None = None,
    match_pixel_size: bool = False,
) -> Iterator[SliceResult]:
    """Predict ``image`` slice by slice, yielding each finished slice.

    Parameters
    ----------
    model : TrainedModel
    image : array-like
        (Y, X) or (Z, Y, X), channels last if the model was trained on several channels. A dask
        array is read one slice at a time, so memory stays bounded by a tile batch and one slice's
        working data (its input and class sums), whatever the depth.
    output : str
        A name in ``outputs.OUTPUTS``: 'labels' (class labels, in the annotation's values),
        'instances' (instance labels) or 'probability' (foreground probability).
    tile_size, overlap : int, optional
        Tile side and overlap in pixels (defaults follow the training patch size).
    batch_size : int, optional
        Tiles per forward pass; tiles of consecutive slices share batches (default: 4 on the CPU,
        16 on a GPU).
    device : str
        'auto', 'cpu', 'cuda' or 'mps'.
    stop : threading.Event, optional
        Set it to cancel; ``Cancelled`` is raised before the next batch.
    link_slices : bool
        For instances in a stack: an object continuing from the previous slice (overlap IoU ≥ 0.5)
        keeps its id, so objects are 3D. False gives every slice's objects their own ids.
    tta : bool
        Test-time augmentation: average the predictions of the 8 flips and 90° turns of each tile
        (8 times the network's work; see the README for what it gains).
    cleanup : postprocess.Cleanup or None
        How objects are tidied in 'labels' and 'instances': watershed lines between touching
        objects, minimum object size, hole filling. None keeps the network's raw classes.
    object_size : 'auto', float or None
        The typical diameter (pixels) of the objects in ``image``; the image is rescaled so that
        they have the size the model was trained on, and the results are scaled back. 'auto'
        estimates it from a first pass over the middle slice (rescaling only when the sizes differ
        by more than 25 %); None predicts at the image's own scale.
    pixel_size, match_pixel_size : optional
        The image's (y, x) physical pixel size: see ``rescaling`` (a warning, or a rescaling).
    """
    kind, geometry = get_output(output), volume_geometry(image.shape, model.config.in_channels)
    model = for_this_image(model, image, geometry)
    options: dict[str, Any] = dict(
        tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device, stop=stop, tta=tta
    )
    factor = rescaling(model, image, geometry, object_size, pixel_size, match_pixel_size, options)
    on_device = kind.on_device(model.encoding, cleanup) if factor == 1.0 else None
    to_output = None if on_device is not None else kind.on_host(model.encoding, cleanup)
    shape, planes = _scaled_shape(geometry, factor), _read_slices(model, image, geometry)
    if factor != 1.0:
        planes = ((index, _resize(plane, shape)) for index, plane in planes)
    slices = stream_slices(model, planes, *shape, convert=on_device or (lambda p: p), **options)
    finish = partial(_finish_slice, factor=factor, size=(geometry.height, geometry.width), to_output=to_output)
    # The host's share (resizing back, post-processing) runs on worker threads while the next
    # slices compute; the ids are linked across slices in order, here.
    previous, next_id, workers = None, 1, host_workers() if to_output is not None or factor != 1.0 else 1
    for done, (index, result) in enumerate(ordered_map(finish, slices, workers), start=1):
        if kind.objects:
            result, next_id = renumber_instances(result, previous if link_slices else None, next_id)
            previous = result
        yield SliceResult(index, result, done, geometry.n_slices)


def _finish_slice(item: tuple[int, np.ndarray], factor: float, size: tuple[int, int], to_output) -> tuple:
    """The host's share of one slice: scaled back to the image's size, then converted."""
    index, converted = item
    if factor != 1.0:
        converted = _resize(converted, size)
    return index, converted if to_output is None else to_output(converted)


def host_workers() -> int:
    """Threads for the host's per-slice work (scikit-image and scipy release the GIL)."""
    return max(1, min(HOST_WORKERS, os.cpu_count() or 1))


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(function, items)`` on ``workers`` threads, in order, at most ``2 × workers`` ahead."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="napari-pix2pix-host") as pool:
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                window.append(pool.submit(function, item))
                if len(window) > 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


class PixelSizeWarning(UserWarning):
    """The image's pixels are not the size of the training images'."""

    def __init__(self, model: TrainedModel, pixel_size):
        super().__init__(
            f"the image's pixels are {_size(pixel_size)}, the model was trained on pixels of "
            f"{_size(model.pixel_size)}; rescale to the model's pixel size (--match-pixel-size, or the "
            "Predict widget's option) for results at the size the model learned"
        )


def _size(pixel_size) -> str:
    return " × ".join(f"{v:g}" for v in pixel_size)


def rescaling(model, image, geometry, object_size, pixel_size, match_pixel_size: bool, options: dict) -> float:
    """The factor an image is scaled by before the network: to the training images' pixel size when
    both are known and ``match_pixel_size`` (else a ``PixelSizeWarning`` if they differ), or to the
    object size the model learned (``scale_factor``)."""
    ratio = pixel_size_ratio(model, pixel_size)
    if ratio is not None and match_pixel_size:
        return _bounded(ratio)  # sizes are known, not estimated
    if ratio is not None:
        warnings.warn(PixelSizeWarning(model, pixel_size), stacklevel=3)
    return scale_factor(model, image, geometry, object_size, **options)


def pixel_size_ratio(model: TrainedModel, pixel_size) -> float | None:
    """How much bigger the image's pixels are than the training images' (the mean over y and x),
    or None when either is unknown or they agree within 2 %."""
    if pixel_size is None or model.pixel_size is None:
        return None
    y, x = check_pixel_size(pixel_size)
    ratio = float(np.sqrt(y / model.pixel_size[0] * x / model.pixel_size[1]))
    return None if abs(ratio - 1) <= 0.02 else ratio


def scale_factor(
    model: TrainedModel, image, geometry: VolumeGeometry, object_size: float | str | None, **options
) -> float:
    """How much to scale ``image`` so its objects have the size the model learned (see ``iter_predict``)."""
    if object_size is None or model.object_size is None:
        return 1.0
    if object_size != AUTO_SIZE:
        if isinstance(object_size, str) or not float(object_size) > 0:
            raise InputError(f"object size must be a positive number of pixels, 'auto' or None, got {object_size!r}")
        return _bounded(model.object_size / float(object_size))
    plane = read_slice(image, geometry.n_slices // 2, geometry, model)
    factor, best = 1.0, (math.inf, 1.0)  # (how far the measured size was from the model's, at which factor)
    for _ in range(3):  # the first estimate can be rough when the sizes differ a lot: refine it
        shape = _scaled_shape(geometry, factor)
        scaled = plane if factor == 1.0 else _resize(plane, shape)
        ((_, probabilities),) = stream_slices(model, [(0, scaled)], *shape, **options)
        size = typical_object_size(model.encoding.instances(probabilities, DEFAULT_CLEANUP))
        if size is None:
            break
        correction = model.object_size / size
        if abs(math.log(correction)) >= best[0]:
            # Rescaling moved the objects' size away from the model's (e.g. membranes of EM, whose
            # regions fragment as they are magnified): the estimate is not to be trusted. Keep the
            # factor that came closest (1 if that was the image as it is).
            factor = best[1]
            break
        best = (abs(math.log(correction)), factor)
        if 1 / SIZE_AGREES <= correction <= SIZE_AGREES:
            break
        factor = _bounded(factor * correction)
    return 1.0 if 1 / SIZE_TOLERANCE <= factor <= SIZE_TOLERANCE else factor


def _bounded(factor: float) -> float:
    return float(min(max(factor, 0.25), 4.0))


def _scaled_shape(geometry: VolumeGeometry, factor: float) -> tuple[int, int]:
    return max(1, round(geometry.height * factor)), max(1, round(geometry.width * factor))


def _resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (C, H, W) float32 array resized to (C, *shape), bilinear with antialiasing."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    resized = torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return resized[0].numpy()


def predict(model: TrainedModel, image, output: str = "labels", **options) -> np.ndarray:
    """Predict a whole image or stack into memory; see ``iter_predict`` for the options."""
    geometry = volume_geometry(image.shape, model.config.in_channels)
    volume = None
    for result in iter_predict(model, image, output, **options):
        if not geometry.is_stack:
            return result.data
        if volume is None:
            volume = np.empty((geometry.n_slices, *result.data.shape), dtype=result.data.dtype)
        volume[result.index] = result.data
    if volume is None:
        raise InputError("the image has no slices to predict")
    return volume


def output_shape(model: TrainedModel, output: str, geometry: VolumeGeometry) -> tuple[int, ...]:
    """The shape ``predict`` gives for ``output``: the image's spatial shape, with a class axis
    before (Y, X) for per-class outputs."""
    if not get_output(output).channels:
        return geometry.spatial_shape
    return (*geometry.spatial_shape[:-2], model.encoding.n_classes, geometry.height, geometry.width)


def convert_probabilities(
    model: TrainedModel,
    probabilities: np.ndarray,
    output: str,
    cleanup: Cleanup | None = DEFAULT_CLEANUP,
    link_slices: bool = True,
) -> np.ndarray:
    """``output`` from stored class probabilities ((K, Y, X), or (Z, K, Y, X) for a stack), exactly as
    ``predict`` makes it from the network's: post-processing can be redone without the network."""
    kind = get_output(output)
    stack = probabilities.ndim == 4
    planes = probabilities if stack else probabilities[None]
    convert = kind.on_host(model.encoding, cleanup)
    slices = ordered_map(lambda p: convert(np.asarray(p, np.float32)), planes, host_workers())
    results, previous, next_id = [], None, 1
    for result in slices:
        if kind.objects:
            result, next_id = renumber_instances(result, previous if link_slices else None, next_id)
            previous = result
        results.append(result)
    return np.stack(results) if stack else results[0]


def output_dtype(model: TrainedModel, output: str) -> np.dtype:
    """The dtype ``iter_predict`` gives for ``output`` with ``model``."""
    return get_output(output).dtype(model.encoding)
