"""Training pairs: the (image, labels) layers a run trains on, and corrected predictions.

A Labels layer the Predict widget made remembers which slices the user has painted on since; when
it is used for training, only those corrected slices count (the rest are the model's own guesses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget

from ..errors import InputError
from ._layers import layer_array

PREDICTED = "napari-pix2pix model"  # metadata of a layer the Predict widget made: the model's name
EDITED = "napari-pix2pix corrected slices"  # metadata: the slices painted on since (all, for 2D)
NO_PAIRS = "Training pairs: none added, so the image and labels above are used."


def track_corrections(layer: Labels) -> None:
    """Record in ``layer.metadata`` which slices of a predicted Labels layer the user paints on."""
    layer.metadata[EDITED] = set()

    def painted(event: napari.utils.events.Event) -> None:
        for atom in event.value:
            layer.metadata[EDITED].update(_slices_touched(atom, layer.ndim))

    layer.events.paint.connect(painted)


def _slices_touched(atom: Any, ndim: int) -> set[int]:
    """The first-axis indices a paint "atom" changed: a brush stroke's bounding box, or the
    indices ``data_setitem`` wrote; {0} for a 2D layer."""
    if ndim < 3:
        return {0}
    key = getattr(atom, "slice_key", None)
    if key is not None:  # a brush, fill or polygon edit
        first = key[0]
        return set(range(first.start or 0, first.stop)) if isinstance(first, slice) else {int(first)}
    return {int(i) for i in np.unique(np.asarray(atom[0][0]))}


def training_labels(layer: Labels) -> np.ndarray:
    """A copy of the layer's labels to train on: for a prediction, only its corrected slices."""
    data = np.array(layer_array(layer), copy=True)
    if PREDICTED not in layer.metadata or EDITED not in layer.metadata:
        return data
    edited = sorted(layer.metadata[EDITED])
    if not edited:
        raise InputError(
            f"'{layer.name}' is a prediction: correct at least one slice with the brush first "
            "(only the slices you correct are trained on; the rest are the model's own guesses)"
        )
    if layer.ndim < 3:
        return data
    kept = np.zeros_like(data)
    kept[edited] = data[edited]
    return kept


class TrainingPairs(QWidget):
    """A list of (image, labels) layer pairs with Add and Remove; empty means: the pair chosen above."""

    def __init__(self, viewer: napari.viewer.Viewer, current: Callable[[], tuple[Image | None, Labels | None]]) -> None:
        super().__init__()
        self._current = current  # () -> (image layer, labels layer) chosen in the pickers
        self.pairs: list[tuple[Image, Labels]] = []
        self.list = QListWidget()
        self.list.setMaximumHeight(90)
        self.add_button = QPushButton("Add pair")
        self.add_button.setToolTip("Add the image and labels chosen above to the training pairs")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setEnabled(False)
        self.note = QLabel(NO_PAIRS)
        self.note.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        self.list.itemSelectionChanged.connect(lambda: self.remove_button.setEnabled(bool(self.list.selectedItems())))
        viewer.layers.events.removed.connect(self._forget_removed)
        self._refresh()

    def add_current(self) -> None:
        image, labels = self._current()
        if image is None or labels is None:
            raise InputError("choose an Image and a Labels layer above, then add them as a pair")
        if (image, labels) not in self.pairs:
            self.pairs.append((image, labels))
        self._refresh()

    def remove_selected(self) -> None:
        for row in sorted((self.list.row(item) for item in self.list.selectedItems()), reverse=True):
            del self.pairs[row]
        self._refresh()

    def chosen(self) -> list[tuple[Image, Labels]]:
        """The pairs to train on: the list, or the pickers' pair when the list is empty."""
        if self.pairs:
            return list(self.pairs)
        image, labels = self._current()
        return [] if image is None or labels is None else [(image, labels)]

    def arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Image arrays and copies of their labels (corrected slices only, for predictions)."""
        return [(np.asarray(layer_array(image)), training_labels(labels)) for image, labels in self.chosen()]

    def _forget_removed(self, event: napari.utils.events.Event) -> None:
        self.pairs = [pair for pair in self.pairs if event.value not in pair]
        self._refresh()

    def _refresh(self) -> None:
        self.list.clear()
        for image, labels in self.pairs:
            corrected = labels.metadata.get(EDITED)
            extra = f" (corrected slices: {len(corrected)})" if corrected is not None else ""
            self.list.addItem(f"{image.name}  ←  {labels.name}{extra}")
        self.list.setVisible(bool(self.pairs))
        count = len(self.pairs)
        self.note.setText(
            f"Training pairs: {count}."
            if count
            else "Training pairs: none added, so the image and labels above are used."
        )
