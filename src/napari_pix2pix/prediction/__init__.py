"""Prediction: the tile layout and tile batches, the slice-by-slice pipeline with rescaling to the
model's object and pixel size, and the public functions (``predict``, ``iter_predict``)."""

from ..labels.postprocess import Cleanup
from .pipeline import (
    Cancelled,
    PixelSizeWarning,
    SliceResult,
    VolumeGeometry,
    iter_predict,
    iter_probabilities,
    predict,
)

__all__ = [
    "Cancelled",
    "Cleanup",
    "PixelSizeWarning",
    "SliceResult",
    "VolumeGeometry",
    "iter_predict",
    "iter_probabilities",
    "predict",
]
