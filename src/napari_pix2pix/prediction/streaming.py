"""Streaming tiles through a network: a slice's tile plan (mirrored windows, shared blending
weights), tile batches shared across slices, the accumulator that blends each slice's tiles and
converts it once its last tile is in, and ``stream_slices`` tying them together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ..checks import check_at_least
from ..devices import autocast, check_batch_memory, memory_format, resolve_device, tile_batch
from ..errors import Cancelled
from ..models.trained import TrainedModel
from .settings import PredictionSettings
from .tiling import TileLayout, mirrored_indices, tile_layout

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
            y: mirrored_window(y - layout.offset, layout.in_h, layout.height, device)
            for y in layout.starts(layout.height, layout.out_h)
        }
        self.columns = {
            x: mirrored_window(x - layout.offset, layout.in_w, layout.width, device)
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


def mirrored_window(start: int, length: int, size: int, device: torch.device) -> tuple[slice, torch.Tensor | None]:
    """Rows ``start`` … ``start + length`` of an axis of ``size`` pixels, mirrored at its ends like
    ``numpy.pad(mode="reflect")``: a plain slice where the window lies inside, else a slice covering
    the pixels it needs and the indices to take within that slice."""
    if start >= 0 and start + length <= size:
        return slice(start, start + length), None
    positions = mirrored_indices(start, start + length, size)
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
        shape = (size, channels, layout.in_h, layout.in_w)
        self.inputs = torch.empty(shape, device=device, memory_format=memory_format(device))
        self.places: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.places)

    def add(self, index: int, y: int, x: int, window: torch.Tensor) -> None:
        self.inputs[len(self.places)] = window
        self.places.append((index, y, x))

    def run(
        self, network: torch.nn.Module, accumulator: SliceAccumulator, stop: threading.Event | None, tta: bool = False
    ) -> None:
        """Predict the batch, hand its tiles to ``accumulator`` and empty it."""
        if stop is not None and stop.is_set():
            raise Cancelled
        inputs = self.inputs[: len(self.places)]
        with torch.inference_mode(), autocast(self.inputs.device):
            probabilities = _averaged_over_symmetries(network, inputs) if tta else _softmax(network, inputs)
        for (index, y, x), tile in zip(self.places, probabilities):
            accumulator.add(index, y, x, tile)
        self.places.clear()


def _softmax(network: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return torch.softmax(network(inputs).float(), dim=1)


def _averaged_over_symmetries(network: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the class probabilities of the 8 flips and 90° turns of the tiles,
    each turned back and averaged. Each symmetry is one batched forward pass on the device."""
    total = torch.zeros(())
    for flip in (False, True):
        flipped = inputs.flip(-1) if flip else inputs
        for turns in range(4):
            probabilities = torch.rot90(_softmax(network, torch.rot90(flipped, turns, dims=(-2, -1))), -turns, (-2, -1))
            total = total + (probabilities.flip(-1) if flip else probabilities)
    return total / 8


def _hand_over(ready: Iterable[tuple[int, torch.Tensor, torch.cuda.Event | None]]) -> Iterator[tuple[int, np.ndarray]]:
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
    batch_size: int | None = None,
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
    torch_device = resolve_device(device) if isinstance(device, str) else device
    batch_size = tile_batch(torch_device, batch_size)
    check_at_least("batch size", batch_size)
    plan = TilePlan(tile_layout(model, height, width, tile_size, overlap), torch_device)
    layout = plan.layout
    check_batch_memory(
        f"tiles of {layout.in_h}×{layout.in_w}", batch_size, layout.in_h * layout.in_w * model.config.in_channels,
        model.config.width, torch_device, training=False, option="batch size (tiles per batch)",
    )  # fmt: skip
    network = model.network.to(torch_device).to(memory_format=memory_format(torch_device)).eval()
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


def stream_with(
    model: TrainedModel,
    planes: Iterable[tuple[int, np.ndarray]],
    shape: tuple[int, int],
    settings: PredictionSettings,
    stop: threading.Event | None = None,
    convert: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
) -> Iterator[tuple[int, np.ndarray]]:
    """``stream_slices`` of ``planes`` of ``shape`` with the tiling, device and TTA of ``settings``."""
    return stream_slices(
        model,
        planes,
        *shape,
        convert=convert,
        tile_size=settings.tile_size,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        device=settings.device,
        stop=stop,
        tta=settings.tta,
    )
