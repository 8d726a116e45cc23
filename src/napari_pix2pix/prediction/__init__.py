"""Prediction: the settings (``PredictionSettings``), how an image is read, the tile layout and
tile batches, rescaling to the model's object and pixel size, the slice-by-slice pipeline and the
sinks slices are written into (array, OME-Zarr, TIFF)."""

from ..errors import Cancelled
from ..labels.postprocess import Cleanup
from .pipeline import SliceResult, iter_predict, iter_probabilities, predict, write_prediction
from .reading import VolumeGeometry, volume_geometry
from .rescale import PixelSizeWarning
from .settings import PredictionSettings
from .sinks import ArraySink, SliceSink, TiffSink, ZarrSink, file_sink

__all__ = [
    "ArraySink",
    "Cancelled",
    "Cleanup",
    "PixelSizeWarning",
    "PredictionSettings",
    "SliceResult",
    "SliceSink",
    "TiffSink",
    "VolumeGeometry",
    "ZarrSink",
    "file_sink",
    "iter_predict",
    "iter_probabilities",
    "predict",
    "volume_geometry",
    "write_prediction",
]
