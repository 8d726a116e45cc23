"""Reading and writing TIFF images (the command line's files)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_write

#: The TIFF Software tag of every file napari-pix2pix writes: a batch replaces only such files.
SOFTWARE = "napari-pix2pix"


def read_tiff(path: str | os.PathLike, lazy: bool = False) -> np.ndarray:
    """Read a TIFF file; ``lazy`` memory-maps it when possible so big volumes stream from disk."""
    import tifffile

    if Path(path).is_dir():
        raise InputError(f"{path} is a folder, not a TIFF file; give the path of an image file")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        if lazy:
            try:
                return tifffile.memmap(path, mode="r")
            except (ValueError, tifffile.TiffFileError, OSError):
                pass  # compressed or tiled: read it whole instead
        return tifffile.imread(path)
    except Exception as error:  # tifffile raises several types for broken files
        raise InputError(f"{path}: not a readable TIFF image ({type(error).__name__}: {error})") from None


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray | None = None,
    *,
    slices: Iterable[np.ndarray] | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype | None = None,
) -> None:
    """Write ``data``, or an iterator of ``slices`` making an array of ``shape`` and ``dtype``,
    atomically (see ``atomic_write``); slices are written as they come, so a stack need not fit in memory."""
    import tifffile

    with atomic_write(path, suffix=".tmp.tif") as tmp:
        if data is not None:
            tifffile.imwrite(tmp, data, photometric="minisblack", software=SOFTWARE)
        else:
            assert shape is not None and dtype is not None, "slices need a shape and a dtype"
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            # One (Y, X) page at a time, also when each slice has channels (Z, C, Y, X).
            pages = (page for s in slices or () for page in np.asarray(s).reshape(-1, *shape[-2:]))
            tifffile.imwrite(
                tmp,
                data=pages,
                shape=shape,
                dtype=dtype,
                photometric="minisblack",
                bigtiff=nbytes > 2**31,
                software=SOFTWARE,
            )


def written_by_napari_pix2pix(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TIFF this program wrote (its Software tag), so replacing it loses no
    data of the user's (labels named like an output, say)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages) and tif.pages[0].software == SOFTWARE  # type: ignore[union-attr]
    except Exception:  # not a TIFF, or unreadable: not ours
        return False
