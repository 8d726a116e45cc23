"""Files: TIFF images, model files, and the atomic write they share."""

from .atomic import atomic_write
from .modelfile import load_model, save_model
from .tiff import read_tiff, write_tiff


def read_image(source):
    """A TIFF (memory-mapped when possible) or an OME-Zarr image (lazily), and its voxel size
    (None when the file gives none)."""
    from .omezarr import is_zarr, read_zarr

    return read_zarr(source) if is_zarr(source) else (read_tiff(source, lazy=True), None)


__all__ = ["atomic_write", "load_model", "read_image", "read_tiff", "save_model", "write_tiff"]
