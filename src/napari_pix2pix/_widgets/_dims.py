"""The Train dock's hint under its *Network* choice: what *automatic* chooses for the chosen layers,
in words, how a 3D network would bin the slices, and how many slices are annotated, recounted as the
user paints."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, Label
from napari.layers import Labels

from ..training.binning import MAX_BINNING, MIN_BINNED_OBJECT, plan_binning
from ..training.config import choose_dims
from ..training.data import annotated_slices
from ._layers import layer_voxel_size

MAX_VOXELS = 2 * 10**8  # annotated slices are counted (as the user paints) up to this size


class DimsHint(Label):
    """A line such as "3D: the stack has 100 slices of 0.284, 2.2× the pixel size; y and x binned 2×
    if the objects are 16 pixels across or more; 5 of 100 slices annotated", kept up to date with the
    choice, the binning box (0: automatic), the layer pickers and the painting."""

    def __init__(self, choice: ComboBox, image_picker: ComboBox, labels_picker: ComboBox, binning: FloatSpinBox):
        super().__init__(value="")
        self.native.setWordWrap(True)  # a long reason wraps instead of widening the dock
        self._choice, self._image_picker, self._labels_picker = choice, image_picker, labels_picker
        self._binning = binning
        self._watched: Labels | None = None
        for widget in (choice, image_picker, labels_picker, binning):
            widget.changed.connect(self.update)
        self.update()

    def update(self, *_: object) -> None:
        image, labels = self._image_picker.value, self._labels_picker.value
        if labels is not self._watched:  # recount as the user paints
            if self._watched is not None:
                self._watched.events.paint.disconnect(self.update)
                self._watched.events.data.disconnect(self.update)
            if labels is not None:  # painted, or its data replaced
                labels.events.paint.connect(self.update)
                labels.events.data.connect(self.update)
            self._watched = labels
        if image is None or labels is None or labels.ndim != 3 or not isinstance(labels.data, np.ndarray):
            self.value = ""
            return
        if labels.data.size > MAX_VOXELS:  # counting would stall the viewer
            self.value = ""
            return
        slices = f"{len(annotated_slices(labels.data))} of {labels.data.shape[0]} slices annotated"
        voxel_size = layer_voxel_size(image)
        automatic = self._choice.value == "auto"
        dims, reason = choose_dims([labels.data.shape], voxel_size)
        in_3d = self._choice.value == "3d" or (automatic and dims == 3)
        binning = _binning_words(voxel_size, int(self._binning.value)) if in_3d else ""
        self.value = "; ".join(part for part in (reason if automatic else "", binning, slices) if part)


def _binning_words(voxel_size: tuple[float, float, float] | None, chosen: int) -> str:
    """What a 3D run will do to the slices' y and x ('' for nothing): the binning chosen, or the most
    the slice spacing allows (the objects' size, measured at Start, may lower it)."""
    if chosen > 1:
        return f"y and x binned {chosen}×"
    if chosen == 1 or voxel_size is None:
        return ""
    most = plan_binning(voxel_size, MAX_BINNING * MIN_BINNED_OBJECT)  # objects large enough for any
    if most == 1:
        return ""
    return f"y and x binned {most}× if the objects are {most * MIN_BINNED_OBJECT:g} pixels across or more"
