"""Loaders for the sample data: real fluorescence nuclei, synthetic EM membranes and 3D nuclei.

The nuclei come from the 2018 Data Science Bowl (see ``napari_pix2pix/sample_data/README.md``
for the attribution); the EM-like membrane stack and the 3D nuclei stack are generated on the fly
by :func:`napari_pix2pix.synthetic.membrane_volume` and
:func:`napari_pix2pix.samples.confocal.nuclei_volume` rather than shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .confocal import nuclei_volume
from .synthetic import membrane_volume

NUCLEI_IMAGE_FILE = "nuclei_image.tif"
NUCLEI_LABELS_FILE = "nuclei_labels.tif"
#: (z, y, x) voxel size of the synthetic 3D nuclei sample, in micrometres.
NUCLEI_3D_VOXEL_SIZE = (0.5, 0.25, 0.25)


def sample_data_dir() -> Path:
    """Return the folder that holds the shipped sample files (``napari_pix2pix/sample_data``).

    Returns
    -------
    pathlib.Path
        The existing sample-data folder.

    Raises
    ------
    FileNotFoundError
        If the folder is missing (a broken install); the message says where it looked.
    """
    folder = Path(__file__).resolve().parents[1] / "sample_data"
    if not folder.is_dir():
        raise FileNotFoundError(f"napari-pix2pix sample data folder not found at {folder}: reinstall napari-pix2pix")
    return folder


def nuclei_stack() -> tuple[np.ndarray, np.ndarray]:
    """Load four annotated tiles of fluorescence nuclei (DSB2018, BBBC038v1).

    Returns
    -------
    image : numpy.ndarray of uint8
        ``(4, 256, 256)``: the four quarters of one 512x512 image.
    labels : numpy.ndarray of uint16
        ``(4, 256, 256)`` hand-annotated instance labels, 1..N per tile,
        0 for background.

    Raises
    ------
    FileNotFoundError
        If the sample data folder or one of its files is missing.
    """
    folder = sample_data_dir()
    image = tifffile.imread(folder / NUCLEI_IMAGE_FILE)
    labels = tifffile.imread(folder / NUCLEI_LABELS_FILE)
    return image, labels


def membrane_sample() -> tuple[np.ndarray, np.ndarray]:
    """Generate the synthetic EM-like membrane sample (8 sections of 256x256).

    Returns
    -------
    image : numpy.ndarray of uint8
        ``(8, 256, 256)`` EM-like image.
    membranes : numpy.ndarray of uint8
        ``(8, 256, 256)``, 1 on membranes and 0 inside cells.

    See Also
    --------
    napari_pix2pix.synthetic.membrane_volume : the generator, with options.
    """
    image, membranes, _ = membrane_volume(shape=(8, 256, 256), seed=0)
    return image, membranes


def nuclei_3d_sample() -> tuple[np.ndarray, np.ndarray]:
    """Generate the synthetic 3D nuclei sample (48 slices of 128x128, voxels 0.5x0.25x0.25 µm).

    Returns
    -------
    image : numpy.ndarray of uint16
        ``(48, 128, 128)`` confocal-like image of nuclei, voxel size
        ``NUCLEI_3D_VOXEL_SIZE``.
    labels : numpy.ndarray of uint16
        ``(48, 128, 128)`` instance labels, 1..N, 0 for background.

    See Also
    --------
    napari_pix2pix.samples.confocal.nuclei_volume : the generator, with options.
    """
    return nuclei_volume(shape=(48, 128, 128), voxel_size=NUCLEI_3D_VOXEL_SIZE, seed=0)
