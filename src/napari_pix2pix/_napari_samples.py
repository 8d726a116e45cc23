"""napari sample data: each function returns the image and its labels as napari layer data."""

from __future__ import annotations

from . import samples


def nuclei_sample():
    """Real fluorescence nuclei with hand-drawn instance labels (DSB2018, CC0)."""
    image, labels = samples.nuclei_stack()
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei labels", "opacity": 0.5}, "labels"),
    ]


def membrane_sample():
    """A synthetic electron-microscopy-like stack: cells separated by thin dark membranes (1 = membrane)."""
    image, membranes = samples.membrane_sample()
    return [
        (image, {"name": "membranes EM"}, "image"),
        (membranes, {"name": "membranes EM labels", "opacity": 0.5}, "labels"),
    ]
