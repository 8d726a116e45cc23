import threading

import dask.array as da
import numpy as np
import pytest
import torch
from conftest import threshold_model, two_slices_of_discs

from napari_pix2pix.errors import InputError
from napari_pix2pix.labels.encodings import ENCODINGS
from napari_pix2pix.models import ModelConfig, Normalisation, build_model
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix.prediction import Cancelled, iter_predict, iter_probabilities, predict


def random_model(architecture="unet", depth=2, classes=(0, 1), kind="dense", patch_size=64) -> TrainedModel:
    torch.manual_seed(0)
    config = ModelConfig(architecture, 1, len(classes), width=4, depth=depth)
    network = build_model(config).eval()
    return TrainedModel(config, network, ENCODINGS[kind](classes), Normalisation((0.0,), (1.0,)), patch_size)


def whole_image_probabilities(model, image):
    with torch.no_grad():
        return torch.softmax(model.network(torch.from_numpy(image)[None, None]), 1)[0].numpy()


@pytest.mark.parametrize("depth, tolerance", [(1, 1e-5), (2, 1e-5)])
def test_tiles_match_a_whole_image_pass(depth, tolerance):
    model = random_model(depth=depth)
    image = np.random.default_rng(0).random((160, 160), dtype=np.float32)
    ((_, tiled),) = iter_probabilities(model, image, tile_size=64, overlap=32, device="cpu")
    whole = whole_image_probabilities(model, image)
    assert np.abs(tiled - whole).max() < tolerance


def test_seed_unet_prediction_covers_the_whole_input():
    model = random_model("seed-unet", depth=4)
    image = np.random.default_rng(0).random((100, 90), dtype=np.float32)
    labels = predict(model, image, tile_size=188, overlap=8, device="cpu")
    assert labels.shape == image.shape


def test_stack_is_streamed_one_slice_at_a_time():
    class Volume:
        shape, dtype, ndim = (5, 48, 40), np.dtype(np.float32), 3
        reads = []

        def __getitem__(self, index):
            self.reads.append(index)
            return np.full(self.shape[1:], index, np.float32)

        def __array__(self, *args, **kwargs):
            raise AssertionError("the whole volume was loaded")

    volume = Volume()
    results = list(iter_predict(random_model(), volume, device="cpu", batch_size=2))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert volume.reads == [0, 1, 2, 3, 4]
    assert results[-1].done == results[-1].total == 5
    assert all(r.data.shape == (48, 40) for r in results)


def test_dask_stack_gives_labels_in_the_annotation_values():
    model = random_model(classes=(0, 255))
    stack = da.from_array(np.random.default_rng(1).random((3, 40, 56), dtype=np.float32), chunks=(1, 40, 56))
    labels = predict(model, stack, device="cpu")
    assert labels.shape == (3, 40, 56) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 255}


def test_outputs():
    model = random_model()
    image = np.random.default_rng(2).random((2, 32, 32), dtype=np.float32)
    probability = predict(model, image, "probability", device="cpu")
    assert probability.dtype == np.float32 and probability.min() >= 0 and probability.max() <= 1
    assert predict(model, image, "instances", device="cpu").dtype == np.uint32


def test_instances_of_separate_slices_get_ids_unique_in_the_stack():
    stack = two_slices_of_discs()
    instances = predict(threshold_model(), stack, "instances", device="cpu", link_slices=False)
    first, second = set(np.unique(instances[0])) - {0}, set(np.unique(instances[1])) - {0}
    assert len(first) == 2 and len(second) == 3  # every disc found, as its own object
    assert not first & second
    np.testing.assert_array_equal(instances > 0, stack > 0.5)


def test_labels_come_out_in_the_annotation_values():
    stack = two_slices_of_discs()
    labels = predict(threshold_model(classes=(3, 200)), stack, device="cpu")
    np.testing.assert_array_equal(labels, np.where(stack > 0.5, 200, 3))


def test_instance_model_splits_touching_objects():
    probabilities = np.zeros((3, 20, 20), np.float32)
    probabilities[0] = 1
    probabilities[:, 5:15, 2:18] = np.array([0, 1, 0])[:, None, None]
    probabilities[:, 5:15, 10] = np.array([0, 0, 1])[:, None]  # a boundary line between two objects
    from napari_pix2pix.labels.postprocess import instances_from_probabilities

    instances = instances_from_probabilities(probabilities)
    assert instances.max() == 2
    assert (instances[5:15, 2:18] > 0).all()


def test_cancel_stops_prediction():
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        list(iter_predict(random_model(), np.zeros((2, 32, 32), np.float32), stop=stop, device="cpu"))


def test_wrong_channels_and_shapes_are_explained():
    model = random_model()
    with pytest.raises(InputError, match="2D image or a 3D stack"):
        predict(model, np.zeros((2, 2, 32, 32)), device="cpu")
    with pytest.raises(InputError, match="NaN"):
        predict(model, np.full((32, 32), np.nan, np.float32), device="cpu")
    with pytest.raises(InputError, match="output must be"):
        predict(model, np.zeros((32, 32)), "outline", device="cpu")


def test_instances_continue_across_slices_of_a_stack():
    from napari_pix2pix.labels.postprocess import renumber_instances

    first = np.zeros((20, 20), np.uint32)
    first[2:8, 2:8] = 1
    first[12:18, 12:18] = 2
    second = np.zeros_like(first)
    second[3:9, 2:8] = 5  # the same object, shifted by a row
    second[12:18, 1:6] = 7  # a new object
    linked_first, next_id = renumber_instances(first, None, 1)
    linked_second, next_id = renumber_instances(second, linked_first, next_id)
    assert linked_second[5, 5] == linked_first[5, 5]
    assert linked_second[15, 3] not in (0, *np.unique(linked_first))
    assert next_id == 4
    separate, _ = renumber_instances(second, None, next_id)
    assert not set(np.unique(separate)[1:]) & set(np.unique(linked_first)[1:])


@pytest.mark.parametrize("size", [1, 2, 5, 17])
def test_tiles_are_mirrored_at_the_edges_like_numpy_pad(size):
    from napari_pix2pix.prediction.streaming import mirrored_window

    axis = np.arange(size) * 10
    padded = np.pad(axis, 40, mode="reflect")
    for start in (-40, -7, -1, 0, 3, size - 2):
        length = min(30, 40 + size + 40 - (start + 40))
        window, index = mirrored_window(start, length, size, torch.device("cpu"))
        taken = axis[window] if index is None else axis[window][index.numpy()]
        np.testing.assert_array_equal(taken, padded[start + 40 : start + 40 + length])


def test_test_time_augmentation_averages_the_eight_symmetries():
    model = random_model()
    image = np.random.default_rng(3).random((32, 48), dtype=np.float32)
    averaged = predict(model, image, "probability", device="cpu", tta=True)
    expected = np.zeros_like(image)
    for flip in (False, True):
        flipped = image[:, ::-1] if flip else image
        for turns in range(4):
            turned = np.ascontiguousarray(np.rot90(flipped, turns))
            probability = np.rot90(whole_image_probabilities(model, turned)[1], -turns)
            expected += probability[:, ::-1] if flip else probability
    np.testing.assert_allclose(averaged, expected / 8, atol=1e-5)
    assert not np.allclose(averaged, predict(model, image, "probability", device="cpu"), atol=1e-3)


def test_host_work_on_threads_keeps_the_order_and_the_results(monkeypatch):
    from napari_pix2pix.prediction import pipeline as prediction

    assert list(prediction.ordered_map(lambda x: x * x, range(50), 4)) == [x * x for x in range(50)]
    with pytest.raises(ZeroDivisionError):
        list(prediction.ordered_map(lambda x: 1 // (x - 7), range(20), 3))
    model = random_model()
    volume = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
    threaded = predict(model, volume, "instances", device="cpu")
    monkeypatch.setattr(prediction, "HOST_WORKERS", 1)
    np.testing.assert_array_equal(predict(model, volume, "instances", device="cpu"), threaded)


def test_outputs_can_be_remade_from_stored_class_probabilities(membranes, tiny_model):
    from napari_pix2pix.labels.postprocess import Cleanup
    from napari_pix2pix.prediction.pipeline import convert_probabilities

    model = tiny_model
    volume = membranes[0]
    probabilities = predict(model, volume, "class-probabilities", device="cpu")
    assert probabilities.shape == (volume.shape[0], 2, *volume.shape[1:]) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    for output in ("labels", "instances", "probability"):
        np.testing.assert_array_equal(
            convert_probabilities(model, probabilities, output), predict(model, volume, output, device="cpu")
        )
    strict = convert_probabilities(model, probabilities, "labels", Cleanup(threshold=0.9))
    loose = convert_probabilities(model, probabilities, "labels", Cleanup(threshold=0.1))
    background = model.encoding.class_values[model.encoding.background]
    assert (strict != background).sum() < (loose != background).sum()
    with pytest.raises(InputError, match="threshold"):
        Cleanup(threshold=1.5)


def test_another_pixel_size_warns_or_is_matched(membranes, tiny_model):
    from dataclasses import replace

    from napari_pix2pix.prediction import PixelSizeWarning

    model = replace(tiny_model, pixel_size=(0.5, 0.5))
    image = membranes[0][0]
    with pytest.warns(PixelSizeWarning, match="trained on pixels of 0.5 × 0.5"):
        plain = predict(model, image, "probability", pixel_size=(1.0, 1.0), object_size=None, device="cpu")
    matched = predict(model, image, "probability", pixel_size=(1.0, 1.0), match_pixel_size=True, device="cpu")
    assert plain.shape == matched.shape == image.shape
    assert not np.allclose(plain, matched)  # predicted at twice the size, then scaled back
    same = predict(model, image, "probability", pixel_size=(0.505, 0.5), match_pixel_size=True, device="cpu")
    np.testing.assert_array_equal(same, predict(model, image, "probability", device="cpu"))  # within 2 %
    with pytest.raises(InputError, match="pixel size"):
        predict(model, image, pixel_size=(0.0, 1.0), device="cpu")
