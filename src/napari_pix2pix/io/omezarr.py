"""OME-Zarr (OME-NGFF 0.4) images in and out, slice by slice, for volumes larger than memory.

Reading opens the first (full-resolution) dataset of an OME-Zarr image lazily, with its voxel size;
a plain Zarr array is read too. Read as an image for the engine (``as_image``), the NGFF axes are
followed: the image is (Z,) Y, X with its channels last, a time or channel axis of length 1 is
dropped, and more than one time point is refused. Such an image must be whole: a store with missing
chunks is refused before any work (a writer that leaves out empty chunks makes one too), and a
chunk that cannot be decoded, or whose size is not what its header and the array say, is reported
with the slice it holds and the store, never read as zeros or garbage.

Writing creates an OME-NGFF 0.4 image (Zarr format 2, the version napari-ome-zarr, Fiji/MoBIE and
bioimage tools read) with one chunk per slice, every chunk written (empty ones too, so the image is
whole when read back), in a hidden folder beside the target that is renamed into place when
complete, so a failed or interrupted run leaves no partial output and keeps an older one. An
existing target is replaced only when it is an image of that kind (see ``atomic.check_target_folder``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import check_target_folder, remove_stale_temporaries

NGFF_VERSION = "0.4"
#: The axes of NGFF 0.1 and 0.2 images, which always had five and did not name them.
OLD_NGFF_AXES = ("t", "c", "z", "y", "x")
BLOSC_HEADER = 16  # bytes: version, flags, type size, then (little-endian uint32) nbytes, blocksize, cbytes
KINDS = {"t": "time", "c": "channel"}
Key = tuple[int | slice, ...]


def is_zarr(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/").lower().endswith(".zarr")


def read_zarr(
    path: str | os.PathLike, as_image: bool = False, check_chunks: bool = True
) -> tuple[Any, tuple[float, ...] | None]:
    """The full-resolution array of an OME-Zarr image (or a plain Zarr array), opened lazily, and
    its voxel size (None when the file gives none).

    As stored (the default): the Zarr array and one scale per axis. ``as_image``: a ``ZarrImage``
    the engine reads, (Z,) Y, X with the channels last (see the module's notes), and the scale of
    its spatial axes; ``check_chunks`` refuses a store with missing chunks first (it lists the
    store: a Dask worker reading a store already checked skips it)."""
    path = Path(path)
    array, axes, scale = _open(path)
    if not as_image:
        return array, scale
    kinds = _axis_kinds(axes, array.ndim)
    view = image_view(array, path, kinds)
    if check_chunks:
        check_complete(array, path)
    if scale is not None and kinds is not None:
        scale = tuple(scale[axis] for axis in view.order if kinds[axis][1] != "channel")
    return view, scale


def _open(path: Path) -> tuple[Any, list | None, tuple[float, ...] | None]:
    """The full-resolution array at ``path``, its NGFF axes and its scale (None when not given)."""
    import zarr

    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises several types for what is not a Zarr store
        raise InputError(f"{path}: not a readable Zarr store ({type(error).__name__}: {error})") from None
    if isinstance(node, zarr.Array):
        return node, None, None
    attrs: dict[str, Any] = dict(node.attrs.asdict())
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        dataset = multiscales[0]["datasets"][0]
        transforms = dataset.get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
        array = node[dataset["path"]]
        if not isinstance(array, zarr.Array):
            raise TypeError("the dataset is a group")
        axes = multiscales[0].get("axes")
        if axes is None and array.ndim == len(OLD_NGFF_AXES):  # NGFF 0.1 and 0.2: always (t, c, z, y, x)
            axes = list(OLD_NGFF_AXES)
        return array, axes, (tuple(float(v) for v in scale) if scale else None)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        raise InputError(
            f"{path} is a Zarr group but not an OME-Zarr image (no usable 'multiscales' metadata)"
        ) from None


def _axis_kinds(axes: list | None, ndim: int) -> list[tuple[str, str]] | None:
    """(name, kind) of each axis, the kind being 'time', 'channel' or 'space' (any other axis is
    kept in place like a spatial one); None when the metadata names no axes or not one per axis."""
    if not isinstance(axes, list) or len(axes) != ndim:
        return None
    kinds = []
    for axis in axes:
        name = str(axis.get("name", "") if isinstance(axis, dict) else axis).lower()
        kind = axis.get("type") if isinstance(axis, dict) else None
        kind = kind if kind in ("time", "channel", "space") else KINDS.get(name, "space")
        kinds.append((name, kind))
    return kinds


def image_view(array: Any, path: Path, kinds: list[tuple[str, str]] | None) -> ZarrImage:
    """``array`` as the engine takes an image: the spatial axes in their order, then the channels;
    time and channel axes of length 1 are dropped. More than one time point is refused."""
    if kinds is None:  # no axes named: as stored, slices along the first axis of a 3D or 4D array
        return ZarrImage(array, path, tuple(range(array.ndim)), 0 if array.ndim >= 3 else None)
    order: list[int] = []
    channels: list[int] = []
    for axis, (_, kind) in enumerate(kinds):
        length = array.shape[axis]
        if kind == "time" and length > 1:
            raise InputError(
                f"{path} has {length} time points; predict one: save the time point you want as an image of its own"
            )
        if kind in ("time", "channel") and length == 1:
            continue  # read at index 0
        (channels if kind == "channel" else order).append(axis)
    spatial = len(order)
    slice_axis = next((i for i, axis in enumerate(order) if kinds[axis][0] == "z"), 0 if spatial >= 3 else None)
    return ZarrImage(array, path, tuple(order + channels), slice_axis)


class ZarrImage:
    """A Zarr array seen as the engine takes an image (see ``image_view``), read lazily: indexing it
    with integers and slices loads only what it selects, as a numpy array. The chunks a read needs
    are checked first (present; the size their Blosc header, or the array for uncompressed ones,
    gives), and a chunk missing or that cannot be decoded raises ``InputError`` naming its slices
    (in this image's numbering) and the store."""

    def __init__(self, array: Any, path: Path, order: tuple[int, ...], slice_axis: int | None) -> None:
        self.array, self.path, self.order, self.slice_axis = array, path, order, slice_axis
        self.shape = tuple(int(array.shape[axis]) for axis in order)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(order)
        self.chunks = tuple(int(array.chunks[axis]) for axis in order)
        self._folder = _chunk_folder(array)
        self._format = _chunk_format(array)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ZarrImage({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        wanted = _normalise(key, self.shape)
        stored: list[int | slice] = [0] * self.array.ndim  # dropped axes (length 1) at index 0
        for axis, index in zip(self.order, wanted):
            stored[axis] = index
        data = self._read(tuple(stored))
        kept = [axis for axis in range(self.array.ndim) if isinstance(stored[axis], slice)]
        shown = [axis for axis, index in zip(self.order, wanted) if isinstance(index, slice)]
        return np.transpose(data, [kept.index(axis) for axis in shown])

    def _read(self, key: Key) -> np.ndarray:
        for coords in _chunks_of(self.array, key):
            problem = self._chunk_problem(coords)
            if problem is not None:
                raise self._damaged(coords, key, problem)
        try:
            return np.asarray(self.array[key])
        except MemoryError:
            raise
        except Exception as error:  # numcodecs and zarr raise several types for a damaged chunk
            problem = f"cannot be decoded ({type(error).__name__}: {' '.join(str(error).split())})"
            raise self._damaged(self._failing_chunk(key), key, problem) from None

    def _chunk_problem(self, coords: tuple[int, ...]) -> str | None:
        """What is wrong with a chunk's file, from its size and header alone; None if it looks whole."""
        if self._folder is None:
            return None
        file = self._folder / self.array.metadata.encode_chunk_key(coords)
        try:
            size = file.stat().st_size
            with open(file, "rb") as stream:
                header = stream.read(BLOSC_HEADER) if self._format == "blosc" else b""
        except FileNotFoundError:
            return "is missing (the store is incomplete)"
        except OSError:
            return None  # unreadable files are reported by the read itself
        expected = int(np.prod(self.array.chunks)) * self.dtype.itemsize
        if self._format == "raw" and size != expected:
            return f"is {size} bytes, not the {expected} of an uncompressed chunk"
        if self._format == "blosc":
            if len(header) < BLOSC_HEADER:
                return f"is {size} bytes, too short for a Blosc chunk"
            (nbytes,), (cbytes,) = struct.unpack("<I", header[4:8]), struct.unpack("<I", header[12:16])
            if cbytes != size:
                return f"is {size} bytes where its Blosc header says {cbytes} (cut short or overwritten)"
            if nbytes != expected:
                return f"holds {nbytes} bytes of data, not the {expected} of a chunk of this array"
        return None

    def _failing_chunk(self, key: Key) -> tuple[int, ...] | None:
        """The first chunk of ``key`` that cannot be read on its own (None if every one can)."""
        for coords in _chunks_of(self.array, key):
            region = tuple(
                slice(c * size, min((c + 1) * size, n))
                for c, size, n in zip(coords, self.array.chunks, self.array.shape)
            )
            try:
                self.array[region]
            except MemoryError:
                raise
            except Exception:
                return coords
        return None

    def _damaged(self, coords: tuple[int, ...] | None, key: Key, problem: str) -> InputError:
        chunk = f"chunk {self.array.path}/{self.array.metadata.encode_chunk_key(coords)}" if coords else "a chunk"
        return InputError(
            f"{self.path}: {self._where(coords, key)} cannot be read: {chunk} {problem}; "
            "the store is damaged: copy it again, or write it anew"
        )

    def _where(self, coords: tuple[int, ...] | None, key: Key) -> str:
        """'slice N' or 'slices A–B' (the part of ``key`` in chunk ``coords``), or 'the image'."""
        if self.slice_axis is None:
            return "the image"
        axis = self.order[self.slice_axis]
        index = key[axis]
        low, high = (index, index + 1) if isinstance(index, int) else (index.start, index.stop)
        if coords is not None:
            size = self.array.chunks[axis]
            low, high = max(low, coords[axis] * size), min(high, (coords[axis] + 1) * size)
        return f"slice {low}" if high - low <= 1 else f"slices {low}–{high - 1}"


def _normalise(key: Any, shape: tuple[int, ...]) -> Key:
    """``key`` as one integer (non-negative) or slice (step ≥ 1, bounds within the axis) per axis."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = (*key[:at], *(slice(None),) * (len(shape) - len(key) + 1), *key[at + 1 :])
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an image of {len(shape)} dimensions")
    normalised: list[int | slice] = []
    for index, length in zip((*key, *(slice(None),) * (len(shape) - len(key))), shape):
        if isinstance(index, slice):
            start, stop, step = index.indices(length)
            if step < 1:
                raise IndexError("a Zarr image is sliced with a positive step")
            normalised.append(slice(start, max(start, stop), step))
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            position = int(index) + (length if index < 0 else 0)
            if not 0 <= position < length:
                raise IndexError(f"index {index} is out of range for an axis of length {length}")
            normalised.append(position)
        else:
            raise TypeError(f"a Zarr image is indexed with integers and slices, not {type(index).__name__}")
    return tuple(normalised)


def _chunks_of(array: Any, key: Key) -> Iterator[tuple[int, ...]]:
    """The grid coordinates of the chunks that ``key`` (normalised) reads from."""
    ranges = []
    for index, size in zip(key, array.chunks):
        low, high = (index, index + 1) if isinstance(index, int) else (index.start, index.stop)
        if high <= low:
            return
        ranges.append(range(low // size, (high - 1) // size + 1))
    yield from itertools.product(*ranges)


def _chunk_folder(array: Any) -> Path | None:
    """The folder of ``array``'s chunk files when it is in a local, unsharded store, else None."""
    from zarr.storage import LocalStore

    store = array.store_path.store
    if not isinstance(store, LocalStore) or getattr(array, "shards", None) is not None:
        return None
    return Path(store.root) / array.store_path.path


def _chunk_format(array: Any) -> str | None:
    """'blosc' or 'raw' (uncompressed) when a chunk's size can be checked from its file, else None."""
    if np.dtype(array.dtype).kind not in "biuf" or array.filters:
        return None
    if type(getattr(array, "serializer", None)).__name__ not in ("BytesCodec", "NoneType"):
        return None
    compressors = array.compressors
    if not compressors:
        return "raw"
    codec = compressors[0]
    blosc = getattr(codec, "codec_id", None) == "blosc" or type(codec).__name__ == "BloscCodec"
    return "blosc" if len(compressors) == 1 and blosc else None


def check_complete(array: Any, path: Path) -> None:
    """Refuse an array with chunks missing from its store (which Zarr would read as zeros)."""
    if getattr(array, "shards", None) is not None:
        return  # chunks inside shards: checked as they are read
    try:
        present, total = int(array.nchunks_initialized), int(array.nchunks)
    except Exception:  # a store that cannot be listed: its chunks are checked as they are read
        return
    if present < total:
        raise InputError(
            f"{total - present} of {total} chunks of {path} are missing: the store is incomplete; copy it again "
            "whole (or, if its writer left out empty chunks, write it with every chunk)"
        )


def open_for_writing(path: str | os.PathLike) -> Any:
    """The Zarr array at ``path`` opened to write slices into, writing every chunk (empty ones too)."""
    import zarr

    return zarr.open_array(str(path), mode="r+").with_config({"write_empty_chunks": True})


def _axes(ndim: int, channel_axis: int | None) -> list[dict]:
    """NGFF axes: (z,) y, x, with a channel axis "c" at ``channel_axis`` (at -3 when not given for
    more than three axes: the (Z, C, Y, X) of per-class outputs)."""
    if channel_axis is None and ndim > 3:
        channel_axis = -3
    names = ["z", "y", "x"][-(ndim - (channel_axis is not None)) :]
    axes: list[dict] = [{"name": name, "type": "space"} for name in names]
    if channel_axis is not None:
        axes.insert(channel_axis % ndim, {"name": "c", "type": "channel"})
    return axes


@contextlib.contextmanager
def create_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    scale: Sequence[float] | None = None,
    channel_axis: int | None = None,
) -> Iterator[Any]:
    """Yield a writable Zarr array of ``shape`` (one chunk per slice, every chunk written) inside a
    new OME-Zarr image; the image appears at ``path`` only once the block ends without error. An
    existing ``path`` is replaced only when it is an image of this kind."""
    import zarr

    target = Path(path)
    check_target_folder(target)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:80]}.{os.getpid()}.", suffix=".tmp.zarr", dir=target.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        chunks = (1, *shape[1:]) if len(shape) >= 3 else tuple(shape)
        array = group.create_array(
            "0", shape=tuple(shape), chunks=chunks, dtype=np.dtype(dtype), fill_value=0,
            config={"write_empty_chunks": True},
        )  # fmt: skip
        axes = _axes(len(shape), channel_axis)
        spatial = [a for a in axes if a["type"] == "space"]
        given = list(scale)[-len(spatial) :] if scale is not None else [1.0] * len(spatial)
        scales = iter(given)
        full_scale = [1.0 if a["type"] == "channel" else next(scales) for a in axes]
        group.attrs["multiscales"] = [
            {
                "version": NGFF_VERSION,
                "name": target.stem,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": full_scale}]}],
            }
        ]
        yield array
        check_target_folder(target)  # still one to replace (or none): nothing else appeared there meanwhile
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing an older image there."""
    if target.exists():
        old = target.with_name(f".{target.name[:80]}.{os.getpid()}.old.tmp.zarr")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
