"""Files: TIFF images, model files, and the atomic write they share."""

from .atomic import atomic_write
from .modelfile import load_model, save_model
from .tiff import read_tiff, write_tiff

__all__ = ["atomic_write", "load_model", "read_tiff", "save_model", "write_tiff"]
