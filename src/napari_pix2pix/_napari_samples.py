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


def nuclei_3d_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A synthetic confocal-like stack of nuclei with instance labels, for the 3D network.

    Both layers carry the voxel size (0.5 x 0.25 x 0.25 µm, z twice as deep) as their scale, which
    the Train widget reads; the nuclei look round in napari and flatter along z in voxels.
    """
    image, labels = samples.nuclei_3d_sample()
    scale = samples.NUCLEI_3D_VOXEL_SIZE
    return [
        (image, {"name": "nuclei 3D", "scale": scale}, "image"),
        (labels, {"name": "nuclei 3D labels", "scale": scale, "opacity": 0.5}, "labels"),
    ]
