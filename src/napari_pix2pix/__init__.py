"""Train a U-Net or pix2pix network on annotated cell images; predict label layers.

The public API, the same engine the napari widgets and the command line drive::

    from napari_pix2pix import TrainingConfig, fit, predict, save_model, load_model

    model = fit(image, labels, TrainingConfig(max_minutes=5))
    save_model(model, "model.pt")
    instances = predict(load_model("model.pt"), volume, "instances")

Names are imported on first use, so ``import napari_pix2pix`` stays light (napari reads the plugin's
manifest without loading torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# name -> the module that defines it
_API = {
    "fit": "napari_pix2pix.training.fitting",
    "train": "napari_pix2pix.training.fitting",
    "TrainingConfig": "napari_pix2pix.training.config",
    "predict": "napari_pix2pix.prediction.pipeline",
    "iter_predict": "napari_pix2pix.prediction.pipeline",
    "PredictionSettings": "napari_pix2pix.prediction.settings",
    "Cleanup": "napari_pix2pix.labels.postprocess",
    "load_model": "napari_pix2pix.io.modelfile",
    "save_model": "napari_pix2pix.io.modelfile",
    "load_pretrained": "napari_pix2pix.io.pretrained",
    "TrainedModel": "napari_pix2pix.models.trained",
    "InputError": "napari_pix2pix.errors",
    "ModelFileError": "napari_pix2pix.errors",
}

__all__ = [
    "Cleanup",
    "InputError",
    "ModelFileError",
    "PredictionSettings",
    "TrainedModel",
    "TrainingConfig",
    "__version__",
    "fit",
    "iter_predict",
    "load_model",
    "load_pretrained",
    "predict",
    "save_model",
    "train",
]

if TYPE_CHECKING:
    from .errors import InputError, ModelFileError
    from .io.modelfile import load_model, save_model
    from .io.pretrained import load_pretrained
    from .labels.postprocess import Cleanup
    from .models.trained import TrainedModel
    from .prediction.pipeline import iter_predict, predict
    from .prediction.settings import PredictionSettings
    from .training.config import TrainingConfig
    from .training.fitting import fit, train


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_pix2pix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
