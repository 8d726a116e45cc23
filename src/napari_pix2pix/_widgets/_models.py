"""The models trained or loaded in this session and those that ship with the plugin, shared by the
Train and Predict widgets, and the dialog that loads one from a file."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal
from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import InputError
from ..io import load_model
from ..io.pretrained import PRETRAINED, load_pretrained
from ..models.trained import TrainedModel
from ._notify import report_error


class ModelStore:
    """Models trained or loaded in this session, by name, shared by every widget; and the models
    that ship with the plugin, by their label, read from the package when first used."""

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, TrainedModel] = {}
        self._shipped: dict[str, TrainedModel] = {}

    def add(self, name: str, model: TrainedModel) -> str:
        """Store ``model`` under ``name`` (made unique) and return the name used."""
        unique, n = name, 2
        while unique in self._models and self._models[unique] is not model:
            unique, n = f"{name} ({n})", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def names(self) -> list[str]:
        """The models trained or loaded in this session, oldest first."""
        return list(self._models)

    def shipped(self) -> list[str]:
        """The labels of the models that ship with the plugin (those present in this installation)."""
        return [p.label for p in PRETRAINED.values() if p.label not in self._models and p.path.is_file()]

    def choices(self) -> list[str]:
        """Every model a widget offers: this session's, then the shipped ones."""
        return self.names() + self.shipped()

    def is_shipped(self, name: str) -> bool:
        return name not in self._models and any(p.label == name for p in PRETRAINED.values())

    def get(self, name: str) -> TrainedModel:
        if name in self._models:
            return self._models[name]
        if name not in self._shipped:
            (shipped,) = [p for p in PRETRAINED.values() if p.label == name]
            self._shipped[name] = load_pretrained(shipped.name)
        return self._shipped[name]


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
