import numpy as np
import pytest

from napari_pix2pix.checks import check_finite, check_labels
from napari_pix2pix.errors import InputError
from napari_pix2pix.labels.encodings import IGNORE, make_encoding
from napari_pix2pix.models import Normalisation
from napari_pix2pix.training.data import annotated_slices, as_channels_last, split_train_validation


def test_dense_labels_keep_their_values():
    labels = np.array([[0, 255], [255, 0]], np.uint8)
    encoding = make_encoding(labels, "dense")
    assert encoding.class_values == (0, 255)
    assert encoding.encode(labels.astype(np.int64)).tolist() == [[0, 1], [1, 0]]


def test_sparse_scribbles_ignore_zero():
    labels = np.array([[0, 1], [2, 0]])
    encoding = make_encoding(labels, "sparse")
    assert encoding.class_values == (1, 2)
    assert encoding.encode(labels).tolist() == [[IGNORE, 0], [1, IGNORE]]


def test_instances_get_a_boundary_class_between_touching_objects():
    labels = np.zeros((1, 10, 10), np.int64)
    labels[0, 2:8, 1:5] = 1
    labels[0, 2:8, 5:9] = 2  # touching object
    classes = make_encoding(labels, "instances").encode(labels)
    assert set(np.unique(classes)) == {0, 1, 2}
    assert (classes[0, 4, 4:6] == 2).all()  # the shared edge is boundary on both sides
    assert classes[0, 0, 0] == 0 and classes[0, 4, 2] == 1


def test_auto_annotation_kind():
    many = np.arange(20).reshape(4, 5)
    assert make_encoding(many).kind == "instances"
    assert make_encoding(np.array([[0, 1], [2, 1]])).kind == "dense"


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros((8, 8), np.uint8), "all zero"),
        (np.ones((8, 8), np.float32), "integers"),
        (np.full((8, 8), -1), "negative"),
    ],
)
def test_bad_labels_are_explained(labels, message):
    with pytest.raises(InputError, match=message):
        check_labels(labels)


def test_single_class_is_explained():
    with pytest.raises(InputError, match="two classes"):
        make_encoding(np.ones((4, 4), int), "dense")


def test_shape_mismatch_and_channels():
    with pytest.raises(InputError, match="does not match labels shape"):
        as_channels_last(np.zeros((10, 12)), labels_shape=(10, 10))
    assert as_channels_last(np.zeros((10, 12, 3)), labels_shape=(10, 12)).shape == (1, 10, 12, 3)
    assert as_channels_last(np.zeros((5, 10, 12)), labels_shape=(5, 10, 12)).shape == (5, 10, 12, 1)


def test_nan_pixels_are_refused():
    image = np.zeros((4, 4), np.float32)
    image[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_finite(image)


def test_unannotated_slices_are_skipped():
    labels = np.zeros((3, 4, 4), int)
    labels[1, 0, 0] = 1
    assert annotated_slices(labels).tolist() == [1]


def test_normalisation_maps_percentiles_to_unit_range():
    image = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(1, 100, 100, 1)
    normalised = Normalisation.fit(image).apply(image)
    assert np.percentile(normalised, 1) == pytest.approx(0, abs=1e-3)
    assert np.percentile(normalised, 99.8) == pytest.approx(1, abs=1e-3)


def test_validation_takes_whole_slices_from_a_deep_stack():
    images = np.random.default_rng(0).random((10, 1, 32, 32)).astype(np.float32)
    targets = np.ones((10, 32, 32), np.int64)
    train, validation = split_train_validation(images, targets, 0.2, np.random.default_rng(0))
    assert len(train) == 8 and len(validation) == 2
    assert validation.images.shape[2:] == (32, 32)


@pytest.mark.parametrize("slices", [1, 3])
def test_few_slices_each_give_up_a_band_of_their_annotations(slices):
    images = np.random.default_rng(0).random((slices, 1, 200, 50)).astype(np.float32)
    targets = np.full((slices, 200, 50), IGNORE, np.int64)
    targets[:, 20:120] = 1  # annotated rows 20–119 only: the band must come from them
    train, validation = split_train_validation(images, targets, 0.2, np.random.default_rng(0))
    assert len(train) == slices  # every slice still trains
    held_out = validation.targets != IGNORE
    assert held_out.sum() == pytest.approx(0.2 * (targets != IGNORE).sum(), rel=0.05)
    # No label is both trained on and scored, and none is lost.
    assert ((train.targets != IGNORE).sum() + held_out.sum()) == (targets != IGNORE).sum()
    # Validation keeps only the rows it needs: the band and some context above it.
    assert validation.images.shape[2] < 200
    assert validation.images.shape[2] == validation.targets.shape[1]


def test_nothing_is_held_out_when_a_slice_has_one_annotated_row():
    images = np.zeros((1, 1, 40, 40), np.float32)
    targets = np.full((1, 40, 40), IGNORE, np.int64)
    targets[0, 10] = 1
    train, validation = split_train_validation(images, targets, 0.2, np.random.default_rng(0))
    assert validation is None and (train.targets != IGNORE).sum() == 40


def test_labels_beyond_int64_and_images_beyond_float32_are_explained():
    with pytest.raises(InputError, match="too large"):
        check_labels(np.array([[0, 2**63 + 5]], np.uint64))
    with pytest.raises(InputError, match="32-bit"):
        check_finite(np.array([[0.0, 1e300]]))
    with pytest.raises(InputError, match="empty"):
        as_channels_last(np.zeros((0, 128)), labels_shape=(0, 128))


def test_huge_label_ids_are_encoded_without_a_table_as_long_as_the_largest():
    labels = np.array([[0, 2**40], [7, 2**40]], np.int64)
    encoding = make_encoding(labels, "dense")
    assert encoding.encode(labels).tolist() == [[0, 2], [1, 2]]
    assert make_encoding(labels, "sparse").encode(labels).tolist() == [[IGNORE, 1], [0, 1]]
