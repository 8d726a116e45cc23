"""Applying a trained model: tiled, blended, batched prediction that streams slice by slice.

A volume is read one slice at a time (so a lazily loaded dask array larger than memory works),
cut into overlapping tiles that are batched across slices, and stitched back with smooth weights
that fall to zero before a tile's edge, so no seam shows and a padded U-Net gives the result of a
whole-image pass. Each finished slice is turned into the requested output (see ``outputs.py``)
and handed on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checks import check_at_least, check_finite, check_numeric, image_layout
from .devices import autocast, resolve_device
from .errors import Cancelled, InputError
from .outputs import get_output
from .postprocess import Cleanup, renumber_instances, typical_object_size
from .tiling import TileLayout, tile_layout
from .trained_model import TrainedModel

DEFAULT_CLEANUP = Cleanup()
AUTO_SIZE = "auto"
SIZE_TOLERANCE = 1.25  # object sizes within this factor of the trained size are predicted as they are
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


def read_slice(image, index: int, geometry: VolumeGeometry, model: TrainedModel) -> np.ndarray:
    """Slice ``index`` as normalised float32 (C, H, W); only this slice is loaded from a lazy array."""
    plane = np.asarray(image[index] if geometry.is_stack else image)
    check_numeric(plane.dtype)
    check_finite(plane, f"slice {index}" if geometry.is_stack else "the image")
    if geometry.channels == 1:
        plane = plane[..., None]
    return np.ascontiguousarray(np.moveaxis(model.normalisation.apply(plane), -1, 0))


# ----------------------------------------------------------------------------- the tile plan


class TilePlan:
    """The tiles of one slice shape, ready to cut from a slice on the device and to blend back.

    Tiles with the same borders share one weight map (at most 9); mirrored windows are worked out
    once per tile start, not per tile.
    """

    def __init__(self, layout: TileLayout, device: torch.device):
        self.layout = layout
        self.tiles = layout.tiles
        maps: dict[tuple[bool, ...], torch.Tensor] = {}
        for y, x in self.tiles:
            if layout.borders(y, x) not in maps:
                maps[layout.borders(y, x)] = torch.from_numpy(layout.weights(y, x)).to(device)
        self.weights = {(y, x): maps[layout.borders(y, x)] for y, x in self.tiles}
        self.rows = {
            y: _mirrored_window(y - layout.offset, layout.in_h, layout.height, device)
            for y in layout.starts(layout.height, layout.out_h)
        }
        self.columns = {
            x: _mirrored_window(x - layout.offset, layout.in_w, layout.width, device)
            for x in layout.starts(layout.width, layout.out_w)
        }

    def window(self, plane: torch.Tensor, y: int, x: int) -> torch.Tensor:
        """The (C, in_h, in_w) input window of tile (y, x), mirrored past the slice's edges."""
        (row_slice, row_index), (column_slice, column_index) = self.rows[y], self.columns[x]
        window = plane[:, row_slice, column_slice]
        if row_index is not None:
            window = window.index_select(1, row_index)
        if column_index is not None:
            window = window.index_select(2, column_index)
        return window

    def blend(self, sums: torch.Tensor, y: int, x: int, tile: torch.Tensor) -> None:
        """Add tile (y, x)'s probabilities, weighted, to the slice's class sums."""
        h = min(self.layout.out_h, self.layout.height - y)
        w = min(self.layout.out_w, self.layout.width - x)
        sums[:, y : y + h, x : x + w].addcmul_(tile[:, :h, :w], self.weights[(y, x)][:h, :w])


def _mirrored_window(start: int, length: int, size: int, device: torch.device) -> tuple[slice, torch.Tensor | None]:
    """Rows ``start`` … ``start + length`` of an axis of ``size`` pixels, mirrored at its ends like
    ``numpy.pad(mode="reflect")``: a plain slice where the window lies inside, else a slice covering
    the pixels it needs and the indices to take within that slice."""
    if start >= 0 and start + length <= size:
        return slice(start, start + length), None
    positions = np.arange(start, start + length)
    if size == 1:
        positions = np.zeros_like(positions)
    else:
        period = 2 * (size - 1)
        positions = np.abs(positions) % period
        positions = np.where(positions >= size, period - positions, positions)
    low, high = int(positions.min()), int(positions.max()) + 1
    return slice(low, high), torch.from_numpy(positions - low).to(device)


# ----------------------------------------------------------------------------- batches and slices


class SliceAccumulator:
    """Blends computed tiles into per-slice class sums and converts each slice once its last tile is in.

    A slice's sums exist from its first computed tile to its last. A converted slice's copy to the
    host is queued without waiting; ``finished`` holds it with the event marking the copy's end.
    """

    def __init__(self, plan: TilePlan, n_classes: int, convert: Callable[[torch.Tensor], torch.Tensor]):
        self.plan = plan
        self.n_classes = n_classes
        self.convert = convert
        self.sums: dict[int, torch.Tensor] = {}
        self.tiles_left: dict[int, int] = {}
        self.finished: list[tuple[int, torch.Tensor, torch.cuda.Event | None]] = []

    def expect(self, index: int) -> None:
        self.tiles_left[index] = len(self.plan.tiles)

    def add(self, index: int, y: int, x: int, tile: torch.Tensor) -> None:
        if index not in self.sums:
            layout = self.plan.layout
            self.sums[index] = torch.zeros((self.n_classes, layout.height, layout.width), device=tile.device)
        self.plan.blend(self.sums[index], y, x, tile)
        self.tiles_left[index] -= 1
        if self.tiles_left[index] == 0:
            del self.tiles_left[index]
            output = self.convert(self.sums.pop(index)).to("cpu", non_blocking=True)
            event = torch.cuda.Event() if tile.device.type == "cuda" else None
            if event is not None:
                event.record()
            self.finished.append((index, output, event))

    def take_finished(self) -> list[tuple[int, torch.Tensor, torch.cuda.Event | None]]:
        finished, self.finished = self.finished, []
        return finished


class TileBatch:
    """A reused input buffer of up to ``size`` tiles, and where each tile belongs."""

    def __init__(self, size: int, channels: int, layout: TileLayout, device: torch.device):
        self.size = size
        self.inputs = torch.empty((size, channels, layout.in_h, layout.in_w), device=device)
        self.places: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.places)

    def add(self, index: int, y: int, x: int, window: torch.Tensor) -> None:
        self.inputs[len(self.places)] = window
        self.places.append((index, y, x))

    def run(self, network, accumulator: SliceAccumulator, stop: threading.Event | None, tta: bool = False) -> None:
        """Predict the batch, hand its tiles to ``accumulator`` and empty it."""
        if stop is not None and stop.is_set():
            raise Cancelled
        inputs = self.inputs[: len(self.places)]
        with torch.inference_mode(), autocast(self.inputs.device):
            probabilities = _averaged_over_symmetries(network, inputs) if tta else _softmax(network, inputs)
        for (index, y, x), tile in zip(self.places, probabilities):
            accumulator.add(index, y, x, tile)
        self.places.clear()


def _softmax(network, inputs: torch.Tensor) -> torch.Tensor:
    return torch.softmax(network(inputs).float(), dim=1)


def _averaged_over_symmetries(network, inputs: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the class probabilities of the 8 flips and 90° turns of the tiles,
    each turned back and averaged. Each symmetry is one batched forward pass on the device."""
    total = torch.zeros(())
    for flip in (False, True):
        flipped = inputs.flip(-1) if flip else inputs
        for turns in range(4):
            probabilities = torch.rot90(_softmax(network, torch.rot90(flipped, turns, dims=(-2, -1))), -turns, (-2, -1))
            total = total + (probabilities.flip(-1) if flip else probabilities)
    return total / 8


def _hand_over(ready) -> Iterator[tuple[int, np.ndarray]]:
    for index, output, event in ready:
        if event is not None:
            event.synchronize()
        yield index, output.numpy()


def stream_slices(
    model: TrainedModel,
    planes: Iterable[tuple[int, np.ndarray]],
    height: int,
    width: int,
    *,
    convert: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    stop: threading.Event | None = None,
    tta: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """``convert(probabilities)`` of each normalised (C, H, W) slice of ``planes``, as numpy, in order.

    Tiles are cut, blended and converted on the device, so only the slice going in and the output
    coming back cross to the host. Memory holds one tile batch and about one slice: a tile is copied
    into the batch as it is cut, a slice's class sums exist from its first computed tile to its
    last, and a slice big enough to fill batches on its own finishes before the next one is read.
    Finished slices are handed on one batch late: their copy back is queued before the next batch,
    and the caller works on them meanwhile.
    """
    check_at_least("batch size", batch_size)
    torch_device = resolve_device(device) if isinstance(device, str) else device
    plan = TilePlan(tile_layout(model, height, width, tile_size, overlap), torch_device)
    network = model.network.to(torch_device).eval()
    accumulator = SliceAccumulator(plan, model.encoding.n_classes, convert)
    batch = TileBatch(batch_size, model.config.in_channels, plan.layout, torch_device)
    upload = _Uploader(torch_device)
    pending: list = []
    for index, array in planes:
        plane = upload(array)
        accumulator.expect(index)
        for number, (y, x) in enumerate(plan.tiles, start=1):
            batch.add(index, y, x, plan.window(plane, y, x))
            last = number == len(plan.tiles)
            if last:
                del plane  # every tile of it is in a batch: it is not needed while they run
            # A slice that fills batches on its own is finished before the next one is read.
            if len(batch) == batch_size or (last and number >= batch_size):
                batch.run(network, accumulator, stop, tta)
                ready, pending = pending, accumulator.take_finished()
                yield from _hand_over(ready)
    if len(batch):
        batch.run(network, accumulator, stop, tta)
    yield from _hand_over(pending + accumulator.take_finished())


class _Uploader:
    """Copies float32 slices to the device through two pinned host buffers, taking turns.

    A copy from ordinary (pageable) memory would first wait for all the work queued on the GPU;
    from pinned memory it is queued like a kernel, so the next slice goes up while tiles compute.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: list[torch.Tensor] = []
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(array).to(self.device)
        if not self.buffers or tuple(self.buffers[0].shape) != array.shape:
            self.buffers = [torch.empty(array.shape, dtype=torch.float32, pin_memory=True) for _ in range(2)]
        turn, self.turn = self.turn, 1 - self.turn
        copied = self.copied[turn]
        if copied is not None:
            copied.synchronize()  # the copy that last used this buffer is done
        self.buffers[turn].numpy()[...] = array
        on_device = self.buffers[turn].to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.copied[turn] = event
        return on_device


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
    yield from stream_slices(model, _read_slices(model, image, geometry), geometry.height, geometry.width, **options)


def iter_predict(
    model: TrainedModel,
    image,
    output: str = "labels",
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    stop: threading.Event | None = None,
    link_slices: bool = True,
    tta: bool = DEFAULT_TTA,
    cleanup: Cleanup | None = DEFAULT_CLEANUP,
    object_size: float | str | None = AUTO_SIZE,
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
    batch_size : int
        Tiles per forward pass; tiles of consecutive slices share batches.
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
    """
    kind = get_output(output)
    encoding = model.encoding
    geometry = volume_geometry(image.shape, model.config.in_channels)
    options: dict[str, Any] = dict(
        tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device, stop=stop, tta=tta
    )
    factor = scale_factor(model, image, geometry, object_size, **options)
    on_device = kind.on_device(encoding, cleanup) if factor == 1.0 else None
    to_output = kind.on_host(encoding, cleanup) if on_device is None else None
    shape = _scaled_shape(geometry, factor)
    planes = _read_slices(model, image, geometry)
    if factor != 1.0:
        planes = ((index, _resize(plane, shape)) for index, plane in planes)
    slices = stream_slices(model, planes, *shape, convert=on_device or (lambda p: p), **options)
    previous, next_id = None, 1
    for done, (index, converted) in enumerate(slices, start=1):
        if factor != 1.0:
            converted = _resize(converted, (geometry.height, geometry.width))
        result = converted if to_output is None else to_output(converted)
        if kind.objects:
            result, next_id = renumber_instances(result, previous if link_slices else None, next_id)
            previous = result
        yield SliceResult(index, result, done, geometry.n_slices)


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
    factor = 1.0
    for _ in range(3):  # the first estimate can be rough when the sizes differ a lot: refine it
        shape = _scaled_shape(geometry, factor)
        scaled = plane if factor == 1.0 else _resize(plane, shape)
        ((_, probabilities),) = stream_slices(model, [(0, scaled)], *shape, **options)
        size = typical_object_size(model.encoding.instances(probabilities, DEFAULT_CLEANUP))
        if size is None:
            break
        correction = model.object_size / size
        if 1 / SIZE_TOLERANCE <= correction <= SIZE_TOLERANCE:
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


def output_dtype(model: TrainedModel, output: str) -> np.dtype:
    """The dtype ``iter_predict`` gives for ``output`` with ``model``."""
    return get_output(output).dtype(model.encoding)
