"""Where finished slices go: one interface (``SliceSink``) with an in-memory array, an OME-Zarr
store and a TIFF file behind it, so the command line, the widget and the API share one loop.

A sink is a context manager: slices are ``put`` in order inside the block, the output appears when
the block ends without error (files atomically: a failed or cancelled run leaves no partial file
and keeps an older one), and ``result()`` gives what was written."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np

from ..io.atomic import atomic_write
from ..io.omezarr import create_zarr, read_zarr
from ..io.tiff import SOFTWARE


class SliceSink(Protocol):
    """Takes a prediction's slices in order and makes the output."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    def put(self, index: int, data: np.ndarray) -> None:
        """Slice ``index`` of the output (the whole output for a single image)."""

    def result(self) -> Any:
        """What was written, once the block has ended."""


class _Sink:
    """The context-manager half every sink shares: an ``ExitStack`` its ``open`` fills."""

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type, is_stack: bool):
        self.shape, self.dtype, self.is_stack = tuple(shape), np.dtype(dtype), is_stack
        self._stack = contextlib.ExitStack()

    def open(self, stack: contextlib.ExitStack) -> None:
        """Open what the slices go into (called on entering the block)."""

    def __enter__(self) -> Self:
        self._stack.__enter__()
        try:
            self.open(self._stack)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.__exit__(kind, error, traceback)


class ArraySink(_Sink):
    """Slices into a numpy array of ``shape`` (converted to ``dtype``)."""

    def open(self, stack: contextlib.ExitStack) -> None:
        self.array = np.empty(self.shape, self.dtype)

    def put(self, index: int, data: np.ndarray) -> None:
        self.array[index if self.is_stack else ...] = data

    def result(self) -> np.ndarray:
        return self.array


class ZarrSink(_Sink):
    """Slices into a new OME-Zarr image at ``path`` (one chunk per slice), with the voxel ``scale``;
    a class axis before (y, x) is labelled as channels."""

    def __init__(
        self,
        path: str | os.PathLike,
        shape: Sequence[int],
        dtype: np.dtype | type,
        is_stack: bool,
        scale: Sequence[float] | None = None,
        channel_axis: int | None = None,
    ):
        super().__init__(shape, dtype, is_stack)
        if channel_axis is None and len(self.shape) > (3 if is_stack else 2):
            channel_axis = -3  # per-class outputs: (z,) c, y, x
        self.path, self.scale, self.channel_axis = path, scale, channel_axis

    def open(self, stack: contextlib.ExitStack) -> None:
        self.array = stack.enter_context(
            create_zarr(self.path, self.shape, self.dtype, scale=self.scale, channel_axis=self.channel_axis)
        )

    def put(self, index: int, data: np.ndarray) -> None:
        self.array[index if self.is_stack else ...] = data

    def result(self) -> Any:
        """The written image, opened lazily."""
        return read_zarr(self.path)[0]


class TiffSink(_Sink):
    """Slices into a TIFF file at ``path``, written as they come (BigTIFF past 2 GB)."""

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype: np.dtype | type, is_stack: bool):
        super().__init__(shape, dtype, is_stack)
        self.path = path

    def open(self, stack: contextlib.ExitStack) -> None:
        import tifffile

        tmp = stack.enter_context(atomic_write(self.path, suffix=".tmp.tif"))
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.writer = stack.enter_context(tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**31))

    def put(self, index: int, data: np.ndarray) -> None:
        # Contiguous writes of equal slices make one series of the whole shape, read back as (Z, …).
        page = np.asarray(data, dtype=self.dtype)
        self.writer.write(page, contiguous=True, photometric="minisblack", software=SOFTWARE)

    def result(self) -> str | os.PathLike:
        return self.path


def file_sink(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: np.dtype | type,
    is_stack: bool,
    scale: Sequence[float] | None = None,
) -> SliceSink:
    """The sink for an output file: OME-Zarr for a name ending in .zarr (with the voxel ``scale``),
    else TIFF."""
    from ..io.omezarr import is_zarr

    if is_zarr(path):
        return ZarrSink(path, shape, dtype, is_stack, scale=scale)
    return TiffSink(path, shape, dtype, is_stack)
