"""Applying a trained model: tiled, blended, batched prediction that streams slice by slice.

A volume is read one slice at a time (so a lazily loaded dask array larger than memory works),
cut into overlapping tiles that are batched across slices, and stitched back with smooth weights
that fall to zero before a tile's edge, so no seam shows and a padded U-Net gives the result of a
whole-image pass. Each finished slice is turned into the requested output and handed on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .data import InputError
from .devices import autocast, resolve_device
from .modelfile import TrainedModel
from .tiling import tile_layout

OUTPUTS = ("labels", "instances", "probability")


class Cancelled(Exception):
    """Prediction was stopped by the user before it finished."""


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
    shape = tuple(int(n) for n in shape)
    if in_channels > 1:
        if len(shape) < 3 or shape[-1] != in_channels:
            raise InputError(
                f"the model expects {in_channels}-channel images (channels last) but the image has shape {shape}"
            )
        spatial = shape[:-1]
    else:
        spatial = shape
    if len(spatial) not in (2, 3):
        hint = "; an RGB image needs a model trained on RGB images" if shape and shape[-1] in (3, 4) else ""
        raise InputError(f"expected a 2D image or a 3D stack, got shape {shape}{hint}")
    is_stack = len(spatial) == 3
    return VolumeGeometry(spatial[0] if is_stack else 1, spatial[-2], spatial[-1], in_channels, is_stack)


def read_slice(image, index: int, geometry: VolumeGeometry, model: TrainedModel) -> np.ndarray:
    """Slice ``index`` as normalised float32 (C, H, W); only this slice is loaded from a lazy array."""
    plane = np.asarray(image[index] if geometry.is_stack else image)
    if not (np.issubdtype(plane.dtype, np.integer) or np.issubdtype(plane.dtype, np.floating)):
        raise InputError(f"the image must hold numbers, not {plane.dtype}")
    if np.issubdtype(plane.dtype, np.floating) and not np.isfinite(plane).all():
        where = f"slice {index}" if geometry.is_stack else "the image"
        raise InputError(f"{where} has NaN or infinite pixels; replace them (e.g. with 0) first")
    if geometry.channels == 1:
        plane = plane[..., None]
    return np.ascontiguousarray(np.moveaxis(model.normalisation.apply(plane), -1, 0))


# ----------------------------------------------------------------------------- prediction


@dataclass
class SliceResult:
    """One finished slice: its index, the output array, and how many slices are done."""

    index: int
    data: np.ndarray
    done: int
    total: int


def iter_probabilities(
    model: TrainedModel,
    image,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    stop: threading.Event | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities (K, H, W) of each slice of ``image``, in order; see ``iter_predict``."""
    yield from _iter_slices(model, image, lambda p: p, tile_size, overlap, batch_size, device, stop)


def _iter_slices(model, image, convert, tile_size, overlap, batch_size, device, stop) -> Iterator[tuple[int, np.ndarray]]:
    """``convert(probabilities)`` of each slice, as numpy, in order.

    Tiles are cut, blended and converted on the device, so only the slice going in and the output
    coming back cross to the host. Memory holds one tile batch and about one slice: a tile is copied
    into the batch as it is cut (the mirror padding is done per tile, never for the whole slice), a
    slice's class sums exist from its first computed tile to its last, and a slice big enough to fill
    batches on its own finishes before the next one is read. Finished slices are handed on one batch
    late: their copy back is queued before the next batch, and the caller works on them meanwhile.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    geometry = volume_geometry(image.shape, model.config.in_channels)
    layout = tile_layout(model, geometry.height, geometry.width, tile_size, overlap)
    torch_device = resolve_device(device)
    network = model.network.to(torch_device).eval()
    tiles = layout.tiles
    by_borders: dict[tuple[bool, ...], torch.Tensor] = {}  # tiles with the same borders share a map (at most 9)
    for y, x in tiles:
        if layout.borders(y, x) not in by_borders:
            by_borders[layout.borders(y, x)] = torch.from_numpy(layout.weights(y, x)).to(torch_device)
    weights = {(y, x): by_borders[layout.borders(y, x)] for y, x in tiles}
    rows = {y: _mirrored_window(y - layout.offset, layout.in_h, geometry.height, torch_device)
            for y in layout.starts(geometry.height, layout.out_h)}
    columns = {x: _mirrored_window(x - layout.offset, layout.in_w, geometry.width, torch_device)
               for x in layout.starts(geometry.width, layout.out_w)}
    n_classes = model.encoding.n_classes
    inputs = torch.empty((batch_size, geometry.channels, layout.in_h, layout.in_w), device=torch_device)
    batch: list[tuple[int, int, int]] = []
    sums: dict[int, torch.Tensor] = {}  # slice index → weighted sum of its computed tiles' probabilities
    tiles_left: dict[int, int] = {}
    finished: list[tuple[int, torch.Tensor, torch.cuda.Event | None]] = []  # outputs on their way to the host

    def run_batch():
        if stop is not None and stop.is_set():
            raise Cancelled
        with torch.inference_mode(), autocast(torch_device):
            probabilities = torch.softmax(network(inputs[: len(batch)]).float(), dim=1)
        for (index, y, x), tile in zip(batch, probabilities):
            h = min(layout.out_h, layout.height - y)
            w = min(layout.out_w, layout.width - x)
            if index not in sums:
                sums[index] = torch.zeros((n_classes, geometry.height, geometry.width), device=torch_device)
            sums[index][:, y : y + h, x : x + w].addcmul_(tile[:, :h, :w], weights[(y, x)][:h, :w])
            tiles_left[index] -= 1
            if tiles_left[index] == 0:
                del tiles_left[index]
                output = convert(sums.pop(index)).to("cpu", non_blocking=True)
                event = torch.cuda.Event() if torch_device.type == "cuda" else None
                if event is not None:
                    event.record()
                finished.append((index, output, event))
        batch.clear()

    def hand_over(ready):
        for index, output, event in ready:
            if event is not None:
                event.synchronize()
            yield index, output.numpy()

    upload = _Uploader(torch_device)
    pending: list = []
    for index in range(geometry.n_slices):
        plane = upload(read_slice(image, index, geometry, model))
        tiles_left[index] = len(tiles)
        for number, (y, x) in enumerate(tiles, start=1):
            inputs[len(batch)] = _window(plane, rows[y], columns[x])
            batch.append((index, y, x))
            last = number == len(tiles)
            if last:
                del plane  # every tile of it is in a batch: it is not needed while they run
            # A slice that fills batches on its own is finished before the next one is read.
            if len(batch) == batch_size or (last and number >= batch_size):
                run_batch()
                ready, pending = pending, finished[:]
                finished.clear()
                yield from hand_over(ready)
    if batch:
        run_batch()
    yield from hand_over(pending + finished)


def _window(plane: torch.Tensor, rows, columns) -> torch.Tensor:
    """The (C, rows, columns) window of ``plane`` given by two ``_mirrored_window``s."""
    (row_slice, row_index), (column_slice, column_index) = rows, columns
    window = plane[:, row_slice, column_slice]
    if row_index is not None:
        window = window.index_select(1, row_index)
    if column_index is not None:
        window = window.index_select(2, column_index)
    return window


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
        if self.copied[turn] is not None:
            self.copied[turn].synchronize()  # the copy that last used this buffer is done
        self.buffers[turn].numpy()[...] = array
        on_device = self.buffers[turn].to(self.device, non_blocking=True)
        self.copied[turn] = torch.cuda.Event()
        self.copied[turn].record()
        return on_device


def iter_predict(
    model: TrainedModel,
    image,
    output: str = "labels",
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    stop: threading.Event | None = None,
    link_slices: bool = True,
) -> Iterator[SliceResult]:
    """Predict ``image`` slice by slice, yielding each finished slice.

    Parameters
    ----------
    model : TrainedModel
    image : array-like
        (Y, X) or (Z, Y, X), channels last if the model was trained on several channels. A dask
        array is read one slice at a time, so memory stays bounded by a tile batch and one slice's
        working data (its input and class sums), whatever the depth.
    output : {'labels', 'instances', 'probability'}
        Class labels (in the annotation's values), instance labels, or the foreground probability.
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
    """
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    on_device = _device_converter(model, output)
    to_output = (lambda result: result) if on_device else output_converter(model, output)
    n_slices = volume_geometry(image.shape, model.config.in_channels).n_slices
    previous, next_id = None, 1
    slices = _iter_slices(model, image, on_device or (lambda p: p), tile_size, overlap, batch_size, device, stop)
    for done, (index, converted) in enumerate(slices, start=1):
        result = to_output(converted)
        if output == "instances":
            result, next_id = renumber_instances(result, previous if link_slices else None, next_id)
            previous = result
        yield SliceResult(index, result, done, n_slices)


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
    return volume


# ----------------------------------------------------------------------------- outputs


def labels_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer type holding ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def output_dtype(model: TrainedModel, output: str) -> np.dtype:
    """The dtype ``iter_predict`` gives for ``output`` with ``model``."""
    if output == "probability":
        return np.dtype(np.float32)
    if output == "instances":
        return np.dtype(np.uint32)
    if model.encoding.kind == "instances":
        return np.dtype(np.uint8)
    return labels_dtype(max(model.encoding.class_values))


def output_converter(model: TrainedModel, output: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function turning class probabilities (K, H, W) of one slice into the requested output."""
    encoding = model.encoding
    if output == "probability":
        # Probability of anything but the first class (background, or the lowest label value).
        return lambda p: (1.0 - p[0]).astype(np.float32)
    if output == "instances":
        return instances_from_probabilities if encoding.kind == "instances" else _components
    if encoding.kind == "instances":
        return lambda p: (p[0] < 0.5).astype(np.uint8)
    lookup = np.asarray(encoding.class_values).astype(output_dtype(model, output))
    return lambda p: lookup[p.argmax(axis=0)]


def _device_converter(model: TrainedModel, output: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``output_converter`` as tensor operations, run where the probabilities are (None for instances)."""
    if output == "instances":
        return None
    if output == "probability":
        return lambda p: 1.0 - p[0]
    if model.encoding.kind == "instances":
        return lambda p: (p[0] < 0.5).to(torch.uint8)
    values = np.asarray(model.encoding.class_values).astype(output_dtype(model, output))
    lookups: dict[torch.device, torch.Tensor] = {}

    def to_labels(p: torch.Tensor) -> torch.Tensor:
        if p.device not in lookups:
            lookups[p.device] = torch.from_numpy(values.astype(np.int64)).to(p.device)
        labels = torch.empty(p.shape[1:], dtype=_TORCH_DTYPES[values.dtype], device=p.device)
        rows = max(1, _CONVERT_PIXELS // p.shape[2])  # argmax gives int64: convert a band of rows at a time
        for top in range(0, p.shape[1], rows):
            labels[top : top + rows] = lookups[p.device][p[:, top : top + rows].argmax(dim=0)]
        return labels

    return to_labels


_CONVERT_PIXELS = 2**18
_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                 np.dtype(np.uint32): torch.uint32, np.dtype(np.int64): torch.int64}


def renumber_instances(current: np.ndarray, previous: np.ndarray | None, next_id: int) -> tuple[np.ndarray, int]:
    """Give the objects of one slice ids unique in the stack, continuing those of ``previous``.

    An object whose overlap with an object of the previous slice has an IoU of at least 0.5 takes
    that object's id (IoU > 0.5 makes the match one-to-one); every other object gets a new id from
    ``next_id``. Returns the renumbered slice and the next free id.
    """
    ids = np.unique(current)
    ids = ids[ids > 0]
    matches: dict[int, int] = {}
    if previous is not None and ids.size:
        both = (previous > 0) & (current > 0)
        pairs, overlap = np.unique(np.stack([previous[both], current[both]]), axis=1, return_counts=True)
        if overlap.size:
            previous_area = np.bincount(previous.ravel())[pairs[0]]
            current_area = np.bincount(current.ravel())[pairs[1]]
            iou = overlap / (previous_area + current_area - overlap)
            matches = {int(c): int(p) for p, c, v in zip(pairs[0], pairs[1], iou) if v >= 0.5}
    lookup = np.zeros(int(current.max()) + 1, dtype=np.uint32)
    for object_id in ids:
        if int(object_id) in matches:
            lookup[object_id] = matches[int(object_id)]
        else:
            lookup[object_id] = next_id
            next_id += 1
    return lookup[current], next_id


def _components(probabilities: np.ndarray) -> np.ndarray:
    """Instances for a class model: connected regions of any class but the first."""
    from skimage.measure import label

    return label(probabilities.argmax(axis=0) > 0).astype(np.uint32)


def instances_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Instance labels from (background, interior, boundary) probabilities.

    Object interiors, which the boundary class keeps apart where objects touch, seed a watershed
    that grows them over the whole predicted foreground.
    """
    from skimage.measure import label
    from skimage.segmentation import watershed

    foreground = probabilities[0] < threshold
    markers = label((probabilities[1] > threshold) & foreground)
    return watershed(probabilities[2] - probabilities[1], markers, mask=foreground).astype(np.uint32)
