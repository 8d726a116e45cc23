"""The models trained or loaded in this session, shared by the Train and Predict widgets, and the
dialog that loads one from a file."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal
from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import InputError
from ..io import load_model
from ..models.trained import TrainedModel
from ._notify import report_error


class ModelStore:
    """Models trained or loaded in this session, by name, shared by every widget."""

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, TrainedModel] = {}

    def add(self, name: str, model: TrainedModel) -> str:
        """Store ``model`` under ``name`` (made unique) and return the name used."""
        unique, n = name, 2
        while unique in self._models and self._models[unique] is not model:
            unique, n = f"{name} ({n})", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> TrainedModel:
        return self._models[name]


model_store = ModelStore()


def load_model_dialog(parent: QWidget) -> tuple[str, TrainedModel] | None:
    """Ask for a model file, load it safely and add it to the store; None if cancelled or refused."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load model", "", "napari-pix2pix model (*.pt);;All files (*)")
    if not path:
        return None
    try:
        model = load_model(path)
    except InputError as error:
        report_error(error, "Loading the model")
        return None
    return model_store.add(Path(path).stem, model), model
