"""Tests of the sample data loaders."""

import numpy as np
import pytest

from napari_pix2pix.samples import loaders as samples
from napari_pix2pix.samples.synthetic import membrane_volume


def test_sample_data_dir_holds_the_nuclei_files():
    folder = samples.sample_data_dir()
    assert (folder / samples.NUCLEI_IMAGE_FILE).is_file()
    assert (folder / samples.NUCLEI_LABELS_FILE).is_file()


def test_missing_sample_data_dir_says_where_it_looked(tmp_path, monkeypatch):
    package = tmp_path / "site" / "napari_pix2pix"
    (package / "samples").mkdir(parents=True)
    monkeypatch.setattr(samples, "__file__", str(package / "samples" / "loaders.py"))
    with pytest.raises(FileNotFoundError, match="reinstall") as error:
        samples.sample_data_dir()
    assert str(package / "sample_data") in str(error.value)


def test_nuclei_stack_shapes_and_instances():
    image, labels = samples.nuclei_stack()
    assert image.shape == labels.shape == (4, 256, 256)
    assert image.dtype == np.uint8
    assert labels.dtype == np.uint16
    for tile_image, tile_labels in zip(image, labels):
        ids = np.unique(tile_labels)
        assert ids[0] == 0
        assert len(ids) - 1 >= 20
        # Nuclei are the bright objects of a fluorescence image.
        assert tile_image[tile_labels > 0].mean() > tile_image[tile_labels == 0].mean() + 20


def test_membrane_sample_matches_the_generator():
    image, membranes = samples.membrane_sample()
    assert image.shape == membranes.shape == (8, 256, 256)
    assert image.dtype == membranes.dtype == np.uint8
    expected_image, expected_membranes, _ = membrane_volume(shape=(8, 256, 256), seed=0)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(membranes, expected_membranes)
