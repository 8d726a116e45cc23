"""napari sample data: each function returns the image and its labels as napari layer data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import samples

if TYPE_CHECKING:
    import numpy as np


def nuclei_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Real fluorescence nuclei with hand-drawn instance labels (DSB2018, CC0)."""
    image, labels = samples.nuclei_stack()
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei labels", "opacity": 0.5}, "labels"),
    ]


def membrane_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A synthetic electron-microscopy-like stack: cells separated by thin dark membranes (1 = membrane)."""
    image, membranes = samples.membrane_sample()
    return [
        (image, {"name": "membranes EM"}, "image"),
        (membranes, {"name": "membranes EM labels", "opacity": 0.5}, "labels"),
    ]
