"""Tests of the synthetic EM-like membrane volume generator."""

import numpy as np
import pytest
from scipy import ndimage

from napari_pix2pix.samples.synthetic import membrane_volume


@pytest.fixture(scope="module")
def volume():
    return membrane_volume(shape=(8, 256, 256), seed=0)


def _near_fraction(moved: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of `moved` membrane pixels within 1 px of `reference` ones."""
    near = ndimage.binary_dilation(reference.astype(bool))
    return float(near[moved.astype(bool)].mean())


def test_shapes_and_dtypes(volume):
    image, membranes, cells = volume
    assert image.shape == membranes.shape == cells.shape == (8, 256, 256)
    assert image.dtype == np.uint8
    assert membranes.dtype == np.uint8
    assert cells.dtype == np.int32
    assert set(np.unique(membranes)) == {0, 1}


def test_2d_shape_gives_2d_arrays():
    image, membranes, cells = membrane_volume(shape=(64, 96), seed=3)
    assert image.shape == membranes.shape == cells.shape == (64, 96)
    assert membranes.any() and cells.max() > 1


def test_same_seed_is_identical_and_other_seed_differs(volume):
    small = membrane_volume(shape=(2, 64, 64), seed=5)
    again = membrane_volume(shape=(2, 64, 64), seed=5)
    other = membrane_volume(shape=(2, 64, 64), seed=6)
    for first, second in zip(small, again):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(small[0], other[0])
    assert not np.array_equal(small[1], other[1])


def test_membranes_are_a_thin_minority(volume):
    _, membranes, _ = volume
    assert 0.05 < membranes.mean() < 0.25


def test_membranes_are_darker_than_cells(volume):
    image, membranes, _ = volume
    on = image[membranes == 1].mean()
    off = image[membranes == 0].mean()
    assert off - on > 50
    # Textured, noisy interior rather than flat grey.
    assert image[membranes == 0].std() > 8


def test_cells_are_many_regions_separated_by_membranes(volume):
    _, membranes, cells = volume
    np.testing.assert_array_equal(cells == 0, membranes == 1)
    for section in cells:
        assert len(np.unique(section)) - 1 > 10
    # Closed outlines: two touching pixels of different cells never occur.
    for axis in (1, 2):
        a = np.moveaxis(cells, axis, 0)[:-1]
        b = np.moveaxis(cells, axis, 0)[1:]
        touching = (a > 0) & (b > 0)
        assert np.all(a[touching] == b[touching])


def test_cell_ids_are_consecutive(volume):
    _, _, cells = volume
    ids = np.unique(cells)
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))


def test_consecutive_sections_are_similar_but_not_identical(volume):
    image, membranes, _ = volume
    for z in range(len(membranes) - 1):
        assert not np.array_equal(membranes[z], membranes[z + 1])
        assert not np.array_equal(image[z], image[z + 1])
        # Most membranes move by at most a pixel from one section to the next.
        assert _near_fraction(membranes[z + 1], membranes[z]) > 0.65
        shared = membranes[z].astype(bool) & membranes[z + 1].astype(bool)
        assert shared.sum() > 0.4 * membranes[z].sum()
    # ... but the stack as a whole is not one repeated section.
    assert _near_fraction(membranes[-1], membranes[0]) < 0.5


def test_larger_z_step_changes_sections_more():
    _, smooth, _ = membrane_volume(shape=(2, 128, 128), z_step=0.25, seed=2)
    _, jumpy, _ = membrane_volume(shape=(2, 128, 128), z_step=4.0, seed=2)
    assert _near_fraction(jumpy[1], jumpy[0]) < _near_fraction(smooth[1], smooth[0])


def test_larger_cell_size_gives_fewer_cells():
    _, _, small = membrane_volume(shape=(128, 128), cell_size=20, seed=1)
    _, _, large = membrane_volume(shape=(128, 128), cell_size=60, seed=1)
    assert small.max() > 2 * large.max()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shape": (5,)}, "shape"),
        ({"shape": (1, 2, 3, 4)}, "shape"),
        ({"shape": (0, 32)}, "shape"),
        ({"shape": (2.5, 32)}, "shape"),
        ({"cell_size": 2}, "cell_size"),
        ({"cell_size": float("nan")}, "cell_size"),
        ({"cell_size": "big"}, "cell_size"),
        ({"z_step": 0}, "z_step"),
        ({"z_step": -1.0}, "z_step"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        membrane_volume(**kwargs)
