"""Tests of the synthetic volume generators: EM-like membranes and 3D fluorescent nuclei."""

import numpy as np
import pytest
from scipy import ndimage

from napari_pix2pix.samples.confocal import nuclei_volume
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


# --- nuclei_volume ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nuclei():
    return nuclei_volume(seed=0)


def _interior_objects(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """(id, bounding box) of the objects whose box touches no border of the stack."""
    found = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None and all(s.start > 0 and s.stop < n for s, n in zip(box, labels.shape)):
            found.append((index, box))
    return found


def _flatness(labels: np.ndarray) -> float:
    """Mean in-plane over mean z standard deviation (in voxels) of the interior objects."""
    lateral, axial = [], []
    for index, box in _interior_objects(labels):
        z, y, x = np.nonzero(labels[box] == index)
        axial.append(z.std())
        lateral.append((y.std() + x.std()) / 2)
    return float(np.mean(lateral) / np.mean(axial))


def test_nuclei_shapes_and_dtypes(nuclei):
    image, labels = nuclei
    assert image.shape == labels.shape == (48, 128, 128)
    assert image.dtype == np.uint16
    assert labels.dtype == np.uint16


def test_nuclei_same_seed_is_identical_and_other_seed_differs():
    small = nuclei_volume((16, 48, 48), seed=5)
    again = nuclei_volume((16, 48, 48), seed=5)
    other = nuclei_volume((16, 48, 48), seed=6)
    for first, second in zip(small, again):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(small[0], other[0])
    assert not np.array_equal(small[1], other[1])


def test_nuclei_ids_are_consecutive_and_each_one_piece(nuclei):
    _, labels = nuclei
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))
    assert ids.max() > 30
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        _, pieces = ndimage.label(labels[box] == index, structure=np.ones((3, 3, 3)))
        assert pieces == 1


def test_touching_nuclei_keep_separate_ids(nuclei):
    _, labels = nuclei
    _, clumps = ndimage.label(labels > 0)
    assert clumps < labels.max() - 5  # several clumps of touching nuclei ...
    # ... whose nuclei meet face to face with different ids
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)[:-1]
        b = np.moveaxis(labels, axis, 0)[1:]
        meet = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[meet].tolist(), b[meet].tolist())}
    assert len(pairs) >= 5


def test_nuclei_are_flatter_in_z_by_the_anisotropy(nuclei):
    _, labels = nuclei
    assert 1.7 < _flatness(labels) < 2.3  # voxels twice as deep as wide
    _, isotropic = nuclei_volume((32, 64, 64), voxel_size=(0.25, 0.25, 0.25), seed=1)
    assert 0.8 < _flatness(isotropic) < 1.2


def test_nuclei_size_follows_the_diameter(nuclei):
    _, labels = nuclei
    volumes = [np.count_nonzero(labels[box] == i) for i, box in _interior_objects(labels)]
    diameter = 2 * (3 / (4 * np.pi) * np.median(volumes) * 0.5 * 0.25 * 0.25) ** (1 / 3)
    assert 3.2 < diameter < 4.8  # micrometres, for diameter_um=4


def test_nuclei_are_bright_on_an_offset_background_with_some_dim_ones(nuclei):
    image, labels = nuclei
    background = image[ndimage.distance_transform_edt(labels == 0, sampling=(0.5, 0.25, 0.25)) > 1.5]
    assert 90 < np.median(background) < 140  # camera offset plus background photons
    assert background.std() > 3  # noisy
    means = ndimage.mean(image, labels, np.arange(1, labels.max() + 1))
    assert np.median(means) > np.median(background) + 100
    dim = means < np.median(background) + 0.5 * (np.median(means) - np.median(background))
    assert 2 <= dim.sum() < 0.3 * len(means)
    # textured interiors rather than flat
    assert image[labels > 0].std() > 25


def test_nuclei_blur_is_stronger_along_z(nuclei):
    image, _ = nuclei
    values = image.astype(float)
    # Nuclei and texture are isotropic in micrometres, so at the same physical distance (0.5 µm:
    # one voxel along z, two along x) only the point spread function makes z smoother.
    z_corr = np.corrcoef(values[:-1].ravel(), values[1:].ravel())[0, 1]
    x_corr = np.corrcoef(values[..., :-2].ravel(), values[..., 2:].ravel())[0, 1]
    assert z_corr > x_corr + 0.02


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shape": (32, 32)}, "shape"),
        ({"shape": (0, 32, 32)}, "shape"),
        ({"shape": (2.5, 32, 32)}, "shape"),
        ({"voxel_size": (0.5, 0.25)}, "voxel_size"),
        ({"voxel_size": (0.5, 0, 0.25)}, "voxel_size"),
        ({"voxel_size": (0.5, float("inf"), 0.25)}, "voxel_size"),
        ({"voxel_size": 0.5}, "voxel_size"),
        ({"diameter_um": 0.5}, "diameter_um"),
        ({"diameter_um": float("nan")}, "diameter_um"),
        ({"seed": -1}, "seed"),
    ],
)
def test_nuclei_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nuclei_volume(**kwargs)
