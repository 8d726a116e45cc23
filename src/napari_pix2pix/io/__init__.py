"""Files: TIFF images, model files, and the atomic write they share."""

from __future__ import annotations

import os
from typing import Any

from .atomic import atomic_write
from .modelfile import load_model, save_model
from .tiff import read_tiff, tiff_scale, tiff_voxel_size, write_tiff


def read_image(source: str | os.PathLike, check_chunks: bool = True) -> tuple[Any, Any]:
    """A TIFF (read lazily when big: ``tiff.read_tiff``) or an OME-Zarr image (lazily, as ``omezarr.ZarrImage``:
    (Z,) Y, X with the channels last), and its voxel size: one number per spatial axis, (y, x) or
    (z, y, x), None when the file gives none (a TIFF's from its ImageJ or OME metadata, in µm: see
    ``tiff.tiff_scale``); ``check_chunks``: refuse a Zarr store with missing chunks before anything is read."""
    from .omezarr import is_zarr, read_zarr

    if is_zarr(source):
        return read_zarr(source, as_image=True, check_chunks=check_chunks)
    image = read_tiff(source, lazy=True)  # first: it says why a file cannot be read
    return image, tiff_scale(source)


__all__ = [
    "atomic_write",
    "load_model",
    "read_image",
    "read_tiff",
    "save_model",
    "tiff_scale",
    "tiff_voxel_size",
    "write_tiff",
]
