"""Loaders for the sample data: real fluorescence nuclei and synthetic EM membranes.

The nuclei come from the 2018 Data Science Bowl (see ``napari_pix2pix/sample_data/README.md``
for the attribution); the EM-like membrane stack is generated on the fly by
:func:`napari_pix2pix.synthetic.membrane_volume` rather than shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .synthetic import membrane_volume

NUCLEI_IMAGE_FILE = "nuclei_image.tif"
NUCLEI_LABELS_FILE = "nuclei_labels.tif"


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
