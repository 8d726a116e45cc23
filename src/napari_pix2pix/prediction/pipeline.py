"""Applying a trained model: tiled, blended, batched prediction that streams slice by slice.

A volume is read one slice at a time (so a lazily loaded dask array larger than memory works),
cut into overlapping tiles that are batched across slices, and stitched back with smooth weights
that fall to zero before a tile's edge, so no seam shows and a padded U-Net gives the result of a
whole-image pass. Each finished slice is turned into the requested output (see
``labels/outputs.py``) and handed on, to the caller or to a ``SliceSink``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ..labels.outputs import CLASS_PROBABILITIES, HostConverter, get_output
from ..labels.postprocess import Cleanup, renumber_instances
from ..models.trained import TrainedModel
from .objects3d import objects_in_3d, volume_objects
from .reading import VolumeGeometry, for_this_image, read_slices, volume_geometry
from .rescale import (
    VoxelSizeNote,
    rescaling,
    resize,
    scaled_shape,
    voxel_factors,
)
from .settings import PredictionSettings, make_settings
from .sinks import ArraySink, SliceSink
from .streaming import stream_with
from .volume import iter_volume_probabilities, rescaled_volume_probabilities

HOST_WORKERS = 8  # at most; post-processing a 512² slice takes 50–150 ms of one core
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class SliceResult:
    """One finished slice: its index, the output array, and how many slices are done."""

    index: int
    data: np.ndarray
    done: int
    total: int


def iter_probabilities(
    model: TrainedModel,
    image: Any,
    *,
    settings: PredictionSettings | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities (K, H, W) of each slice of ``image``, in order, at the image's own scale.

    Parameters
    ----------
    model : TrainedModel
    image : array-like
        As for ``iter_predict``.
    settings : PredictionSettings, optional
        Only the tiling, device and TTA settings apply.
    stop : threading.Event, optional
        Set it to cancel; ``Cancelled`` is raised before the next batch.
    **options
        Fields of ``PredictionSettings`` to change.

    Returns
    -------
    iterator of (int, numpy.ndarray)
        The slice index and its (K, H, W) float32 probabilities.
    """
    settings = make_settings(settings, None, options)
    geometry = volume_geometry(image.shape, model)
    model = for_this_image(model, image, geometry)
    yield from stream_with(
        model, read_slices(model, image, geometry), (geometry.height, geometry.width), settings, stop
    )


def iter_predict(
    model: TrainedModel,
    image: Any,
    output: str | None = None,
    *,
    settings: PredictionSettings | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> Iterator[SliceResult]:
    """Predict ``image`` slice by slice, yielding each finished slice.

    Parameters
    ----------
    model : TrainedModel
    image : array-like
        (Y, X) or (Z, Y, X), channels last if the model was trained on several channels. A dask
        array is read one slice at a time, so memory stays bounded by a tile batch and one slice's
        working data (its input and class sums), whatever the depth.
    output : str, optional
        The output kind (see ``PredictionSettings.output``); None: the settings' or the model's.
    settings : PredictionSettings, optional
        Every other option (defaults: ``PredictionSettings()``).
    stop : threading.Event, optional
        Set it to cancel; ``Cancelled`` is raised before the next batch.
    **options
        Fields of ``PredictionSettings`` to change, for calls from Python
        (``iter_predict(model, image, "instances", tta=True)``).

    Returns
    -------
    iterator of SliceResult
        Each finished slice, in order.

    Raises
    ------
    InputError
        A setting out of range, or an image the model cannot take (wrong channels, NaN pixels…).
    Cancelled
        When ``stop`` was set.
    """
    settings = make_settings(settings, output, options)
    geometry = volume_geometry(image.shape, model)
    model = for_this_image(model, image, geometry)
    if model.config.dims == 3:
        yield from predict_volume_slices(model, image, geometry, settings, stop)
        return
    factor = rescaling(model, image, geometry, settings, stop)
    yield from predict_slices(model, image, geometry, settings, factor, stop)


def predict_volume_slices(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    stop: threading.Event | None = None,
) -> Iterator[SliceResult]:
    """``iter_predict`` for a 3D network: the volume in blocks, each slice's output as it is ready.
    Instances are found in 3D (a seeded watershed over the class probabilities, kept as float16: of
    the whole volume, or slab by slab for a large one, ``objects3d``), so their ids are unique in the
    volume without linking slices.
    A stack whose voxel size (``settings.voxel_size``) is not the model's is rescaled per axis to the
    model's and its probabilities scaled back, slab by slab whatever its size (a ``VoxelSizeNote``
    says so)."""
    kind = get_output(settings.output_for(model))
    factors = voxel_factors(model, settings.voxel_size)
    if factors is not None:
        warnings.warn(VoxelSizeNote(model, settings.voxel_size, factors), stacklevel=3)
        slices = rescaled_volume_probabilities(model, image, geometry, settings, factors, stop)
    else:
        slices = iter_volume_probabilities(model, image, geometry, settings, stop)
    total = geometry.n_slices
    if not kind.objects:
        convert = kind.on_host(model.encoding, settings.cleanup)
        for done, (index, probabilities) in enumerate(slices, start=1):
            yield SliceResult(index, convert(probabilities), done, total)
        return
    objects = volume_objects(model, slices, geometry, settings.cleanup)  # whole, or slab by slab
    for done, (index, labels) in enumerate(objects, start=1):
        yield SliceResult(index, labels, done, total)


def predict_slices(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    factor: float,
    stop: threading.Event | None = None,
) -> Iterator[SliceResult]:
    """``iter_predict`` with the image's normalisation (``model``) and scale ``factor`` already
    settled: a Dask cluster settles them once for the volume and runs this on each slab."""
    kind = get_output(settings.output_for(model))
    on_device = kind.on_device(model.encoding, settings.cleanup) if factor == 1.0 else None
    to_output = None if on_device is not None else kind.on_host(model.encoding, settings.cleanup)
    shape, planes = scaled_shape(geometry, factor), read_slices(model, image, geometry)
    if factor != 1.0:
        planes = ((index, resize(plane, shape)) for index, plane in planes)
    slices = stream_with(model, planes, shape, settings, stop, convert=on_device or (lambda p: p))
    finish = partial(_finish_slice, factor=factor, size=(geometry.height, geometry.width), to_output=to_output)
    # The host's share (resizing back, post-processing) runs on worker threads while the next
    # slices compute; the ids are linked across slices in order, here.
    previous, next_id, workers = None, 1, host_workers() if to_output is not None or factor != 1.0 else 1
    for done, (index, result) in enumerate(ordered_map(finish, slices, workers), start=1):
        if kind.objects:
            result, next_id = renumber_instances(result, previous if settings.link_slices else None, next_id)
            previous = result
        yield SliceResult(index, result, done, geometry.n_slices)


def _finish_slice(
    item: tuple[int, np.ndarray], factor: float, size: tuple[int, int], to_output: HostConverter | None
) -> tuple[int, np.ndarray]:
    """The host's share of one slice: scaled back to the image's size, then converted."""
    index, converted = item
    if factor != 1.0:
        converted = resize(converted, size)
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


def write_slices(results: Iterable[SliceResult], sink: SliceSink) -> Generator[SliceResult, None, Any]:
    """Put every slice of ``results`` into ``sink``, yielding each (for progress), and return what the
    sink wrote. Nothing appears if it fails or is cancelled."""
    with sink:
        for result in results:
            sink.put(result.index, result.data)
            yield result
    return sink.result()


def write_prediction(
    results: Iterable[SliceResult], sink: SliceSink, on_slice: Callable[[SliceResult], object] = lambda r: None
) -> Any:
    """``write_slices`` to the end, calling ``on_slice`` after each slice; returns what the sink wrote."""
    slices = write_slices(results, sink)
    while True:
        try:
            on_slice(next(slices))
        except StopIteration as done:
            return done.value


def predict_keeping_probabilities(
    model: TrainedModel, image: Any, settings: PredictionSettings, stop: threading.Event | None = None
) -> Generator[SliceResult, None, tuple[np.ndarray, np.ndarray]]:
    """Predict an in-memory image keeping its class probabilities (as float16, half the memory), so
    its post-processing can be redone without the network (``convert_probabilities``): yields
    every slice's probabilities, returns (the output, the probabilities)."""
    geometry = volume_geometry(image.shape, model)
    shape = output_shape(model, CLASS_PROBABILITIES, geometry)
    kept = replace(settings, output=CLASS_PROBABILITIES, cleanup=None)
    sink = ArraySink(shape, np.float16, geometry.is_stack)
    probabilities = yield from write_slices(iter_predict(model, image, settings=kept, stop=stop), sink)
    output = convert_probabilities(
        model, probabilities, settings.output_for(model), settings.cleanup, settings.link_slices
    )
    return output, probabilities


def predict(
    model: TrainedModel,
    image: Any,
    output: str | None = None,
    *,
    settings: PredictionSettings | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> np.ndarray:
    """Predict a whole image or stack into memory.

    Parameters
    ----------
    model : TrainedModel
        A trained model (``fit``, ``load_model``).
    image : array-like
        (Y, X) or (Z, Y, X), channels last for a multi-channel model; numpy, dask or Zarr.
    output : str, optional
        'labels', 'instances', 'probability' or 'class-probabilities' (default: the model's).
    settings : PredictionSettings, optional
        Every other option; see ``PredictionSettings``.
    stop : threading.Event, optional
        Set it to cancel.
    **options
        Fields of ``PredictionSettings`` to change (``predict(model, image, tta=True)``).

    Returns
    -------
    numpy.ndarray
        The output, with the image's spatial shape (a class axis before (Y, X) for per-class outputs).

    Raises
    ------
    InputError
        A setting out of range, or an image the model cannot take; the message says which.

    Examples
    --------
    >>> labels = predict(model, volume, "instances")  # doctest: +SKIP
    """
    settings = make_settings(settings, output, options)
    geometry = volume_geometry(image.shape, model)
    out = settings.output_for(model)
    sink = ArraySink(output_shape(model, out, geometry), output_dtype(model, out), geometry.is_stack)
    return write_prediction(iter_predict(model, image, settings=settings, stop=stop), sink)


def output_shape(model: TrainedModel, output: str, geometry: VolumeGeometry) -> tuple[int, ...]:
    """The shape ``predict`` gives for ``output``: the image's spatial shape, with a class axis
    before (Y, X) for per-class outputs."""
    if not get_output(output).channels:
        return geometry.spatial_shape
    return (*geometry.spatial_shape[:-2], model.encoding.n_classes, geometry.height, geometry.width)


def output_dtype(model: TrainedModel, output: str) -> np.dtype:
    """The dtype ``iter_predict`` gives for ``output`` with ``model``."""
    return get_output(output).dtype(model.encoding)


def convert_probabilities(
    model: TrainedModel,
    probabilities: np.ndarray,
    output: str,
    cleanup: Cleanup | None = Cleanup(),
    link_slices: bool = True,
) -> np.ndarray:
    """``output`` from stored class probabilities ((K, Y, X), or (Z, K, Y, X) for a stack), exactly as
    ``predict`` makes it from the network's: post-processing can be redone without the network."""
    kind = get_output(output)
    stack = probabilities.ndim == 4
    if stack and kind.objects and model.config.dims == 3:  # found in 3D, as predict_volume_slices does
        return objects_in_3d(model, probabilities, cleanup)
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
