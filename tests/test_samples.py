"""Tests of the sample data loaders."""

from pathlib import Path

import numpy as np
import pytest

from napari_pix2pix import _napari_samples
from napari_pix2pix.samples import loaders as samples
from napari_pix2pix.samples.confocal import nuclei_volume
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


def test_nuclei_3d_sample_matches_the_generator():
    image, labels = samples.nuclei_3d_sample()
    assert image.shape == labels.shape == (48, 128, 128)
    assert image.dtype == labels.dtype == np.uint16
    expected_image, expected_labels = nuclei_volume(shape=(48, 128, 128), voxel_size=(0.5, 0.25, 0.25), seed=0)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(labels, expected_labels)


def test_napari_nuclei_3d_sample_has_an_image_and_labels_at_the_voxel_size():
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = _napari_samples.nuclei_3d_sample()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert (image_meta["name"], labels_meta["name"]) == ("nuclei 3D", "nuclei 3D labels")
    assert tuple(image_meta["scale"]) == tuple(labels_meta["scale"]) == (0.5, 0.25, 0.25)
    assert image.shape == labels.shape == (48, 128, 128)
    assert labels.max() > 30


def test_manifest_lists_every_sample_function():
    import yaml

    manifest = yaml.safe_load((Path(_napari_samples.__file__).parent / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    for sample in manifest["contributions"]["sample_data"]:
        module, name = commands[sample["command"]].split(":")
        assert module == "napari_pix2pix._napari_samples"
        assert callable(getattr(_napari_samples, name))
    names = {commands[s["command"]].split(":")[1] for s in manifest["contributions"]["sample_data"]}
    assert names == {"nuclei_sample", "membrane_sample", "nuclei_3d_sample"}
