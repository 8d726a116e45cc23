import warnings

import numpy as np
import pytest
from conftest import threshold_model
from skimage.draw import disk
from skimage.measure import label

from napari_pix2pix.errors import InputError
from napari_pix2pix.labels.postprocess import (
    Cleanup,
    fill_small_holes,
    instances_from_probabilities,
    remove_small_regions,
    separating_lines,
    typical_object_size,
)
from napari_pix2pix.prediction import predict


def two_cells_with_a_gap_in_their_membrane():
    """Object probability of two cells whose separating membrane is faint in the middle."""
    objectness = np.full((40, 60), 0.05)
    objectness[5:35, 5:55] = 0.95
    objectness[5:35, 29:31] = 0.1  # the membrane between them…
    objectness[17:23, 29:31] = 0.8  # …with a faint stretch that the class map reads as interior
    return objectness


def test_a_faint_membrane_still_separates_two_cells():
    objectness = two_cells_with_a_gap_in_their_membrane()
    probabilities = np.stack([1 - objectness, objectness])
    foreground = objectness > 0.5
    assert label(foreground, connectivity=1).max() == 1  # merged through the gap
    lines = separating_lines(probabilities, foreground)
    assert label(foreground & ~lines, connectivity=1).max() == 2
    assert lines[17:23, 28:32].any() and lines.sum() < 60  # a thin line through the gap, not a wall


def test_noise_inside_a_cell_does_not_split_it():
    rng = np.random.default_rng(0)
    objectness = np.full((40, 40), 0.05)
    objectness[5:35, 5:35] = 0.9 + rng.uniform(-0.02, 0.02, (30, 30))
    probabilities = np.stack([1 - objectness, objectness])
    assert not separating_lines(probabilities, objectness > 0.5).any()


def touching_nuclei_probabilities(bridge: float, noise: float = 0.0, depth: int | None = None) -> np.ndarray:
    """(background, interior, boundary) of two touching nuclei whose interiors are joined by a
    bridge of interior probability ``bridge``, with ``noise`` inside; (3, Z, Y, X) given ``depth``."""
    rng = np.random.default_rng(1)
    interior = np.full((40, 70), 0.02)
    for centre in ((20, 20), (20, 48)):
        interior[disk(centre, 14, shape=interior.shape)] = 0.97
    interior[disk((20, 20), 14)] -= rng.uniform(0, noise, interior[disk((20, 20), 14)].shape)
    interior[16:25, 32:37] = bridge  # the narrow neck where they touch
    boundary = np.zeros_like(interior)
    background = 1 - interior - boundary
    probabilities = np.stack([background, interior, boundary]).astype(np.float32)
    return probabilities if depth is None else np.repeat(probabilities[:, None], depth, axis=1)


def test_touching_nuclei_joined_by_likely_interior_are_seeded_apart():
    """The merge seen on real nuclei: a neck the network calls interior (0.8) joins two nuclei;
    seeds from the peaks of the interior probability still count two."""
    probabilities = touching_nuclei_probabilities(bridge=0.8)
    assert instances_from_probabilities(probabilities, dynamic=0).max() == 1  # connected interiors: one
    instances = instances_from_probabilities(probabilities)
    assert instances.max() == 2
    assert instances[20, 20] != instances[20, 48] and 0 not in (instances[20, 20], instances[20, 48])
    volume = touching_nuclei_probabilities(bridge=0.95, depth=5)  # volumes keep interiors connected above 0.9
    assert instances_from_probabilities(volume).max() == 1


def test_in_a_volume_a_neck_below_the_seed_level_joins_no_seeds():
    """Volumes seed connected interiors above VOLUME_SEED_LEVEL (0.9): a neck of 0.6 interior
    probability no longer joins two nuclei, and its voxels still go to one of them."""
    volume = touching_nuclei_probabilities(bridge=0.6, depth=5)
    instances = instances_from_probabilities(volume)
    assert instances.max() == 2 and instances[2, 20, 20] != instances[2, 20, 48]
    assert (instances[:, 16:25, 32:37] > 0).all()  # the neck is foreground, split between the two


def test_float16_probabilities_give_the_objects_of_float32_ones():
    """Volumes keep their class probabilities as float16 and the watershed takes them so (no float32
    copy of all classes): the objects, ids included, are those of the same values in float32, at
    every threshold a user may set."""
    volume = touching_nuclei_probabilities(bridge=0.65, depth=5, noise=0.08).astype(np.float16)
    for threshold in (0.3, 0.5, 0.7):
        half = instances_from_probabilities(volume, threshold=threshold)
        single = instances_from_probabilities(volume.astype(np.float32), threshold=threshold)
        assert half.dtype == np.uint32 and half.max() >= 1
        np.testing.assert_array_equal(half, single)


def test_noise_inside_a_nucleus_does_not_seed_it_twice():
    probabilities = touching_nuclei_probabilities(bridge=0.02, noise=0.08)
    assert instances_from_probabilities(probabilities).max() == 2


def test_small_objects_are_removed_and_small_holes_filled():
    mask = np.zeros((30, 30), bool)
    mask[2:12, 2:12] = True
    mask[5:7, 5:7] = False  # a 4-pixel hole
    mask[20, 20] = True  # a speck
    cleaned = fill_small_holes(remove_small_regions(mask, 5), 4)
    assert not cleaned[20, 20] and cleaned[5:7, 5:7].all() and cleaned[2:12, 2:12].all()
    assert not fill_small_holes(mask, 3)[5:7, 5:7].any()  # larger than allowed: kept
    border = np.ones((10, 10), bool)
    border[0, 3] = False
    assert not fill_small_holes(border, 5)[0, 3]  # touches the edge: not a hole


@pytest.mark.parametrize("change", [dict(dynamic=0), dict(min_size=-1), dict(max_hole=-5)])
def test_bad_cleanup_settings_are_explained(change):
    with pytest.raises(InputError):
        Cleanup(**change)


def test_predicted_labels_and_instances_are_cleaned_up():
    image = np.zeros((40, 60), np.float32)
    for centre in [(20, 18), (20, 42)]:
        image[disk(centre, 11, shape=image.shape)] = 0.9
    image[18:23, 25:36] = 0.6  # a bridge the threshold model reads as object
    image[2, 2] = 0.9  # a speck
    model = threshold_model(classes=(0, 255))
    raw = predict(model, image, "instances", device="cpu", cleanup=None)
    assert raw.max() == 2  # the two cells merged, plus the speck
    cleaned = predict(model, image, "instances", device="cpu", cleanup=Cleanup(min_size=5))
    assert cleaned.max() == 2 and cleaned[2, 2] == 0 and cleaned[20, 18] != cleaned[20, 42]
    labels = predict(model, image, device="cpu", cleanup=Cleanup(min_size=5))
    assert set(np.unique(labels)) == {0, 255} and labels[2, 2] == 0
    assert label(labels > 0, connectivity=1).max() == 2


def discs(radius, count=4, size=96):
    image = np.zeros((size, size), np.float32)
    for i in range(count):
        centre = (size // 4 + (i // 2) * size // 2, size // 4 + (i % 2) * size // 2)
        image[disk(centre, radius, shape=image.shape)] = 1
    return image


def test_typical_object_size_is_the_median_diameter():
    from napari_pix2pix.labels.postprocess import typical_object_size

    assert typical_object_size(label(discs(8))) == pytest.approx(16, rel=0.05)
    assert typical_object_size(label(discs(8, count=2))) is None  # too few objects to say


def test_images_are_rescaled_to_the_object_size_the_model_learned():
    from napari_pix2pix.prediction import PredictionSettings, volume_geometry
    from napari_pix2pix.prediction.rescale import ObjectSizeNote, scale_factor

    model = threshold_model()
    model.object_size = 32.0  # trained on objects 32 pixels across
    image = discs(8)  # these are 16 across
    geometry = volume_geometry(image.shape, model)
    measured, given, none = (PredictionSettings(object_size=s, device="cpu") for s in ("auto", 16.0, None))
    with pytest.warns(ObjectSizeNote, match=r"objects ≈ 1[5-7] px across, the model learned 32 px: predicting at 2"):
        assert scale_factor(model, image, geometry, measured) == pytest.approx(2.0, rel=0.1)
    assert scale_factor(model, image, geometry, given) == 2.0
    assert scale_factor(model, image, geometry, none) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # close enough: left alone, and nothing said
        assert scale_factor(model, discs(15), geometry, measured) == 1.0
    instances = predict(model, image, "instances", device="cpu", object_size=16.0)
    assert instances.shape == image.shape and instances.max() == 4
    np.testing.assert_array_equal(instances > 0, image > 0.5)
    with pytest.raises(InputError, match="object size"):
        predict(model, image, device="cpu", object_size=-3)


def test_an_object_size_estimate_that_diverges_is_not_used(monkeypatch):
    """EM regions fragment as the image is magnified: each rescaling measures smaller objects still.
    The estimate moving away from the model's size is not followed (it once ended at 4×)."""
    import napari_pix2pix.prediction.rescale as rescale
    from napari_pix2pix.prediction import PredictionSettings, volume_geometry

    model = threshold_model()
    model.object_size = 30.0
    image = discs(8)
    geometry, settings = volume_geometry(image.shape, model), PredictionSettings(object_size="auto", device="cpu")
    measured = iter([20.0, 16.0, 14.0])  # 1.5× too small, then worse after each magnification
    monkeypatch.setattr(rescale, "typical_object_size", lambda _: next(measured))
    assert rescale.scale_factor(model, image, geometry, settings) == 1.0
    measured = iter([20.0, 28.0])  # 1.5× too small, then close after magnifying 1.5×: followed
    monkeypatch.setattr(rescale, "typical_object_size", lambda _: next(measured))
    assert rescale.scale_factor(model, image, geometry, settings) == pytest.approx(1.5)


def test_object_size_of_instances_with_huge_ids_needs_no_memory_for_the_ids():
    """Instance ids near 2⁴⁵ are valid labels; measuring their size must not allocate per id value."""
    instances = label(discs(8)).astype(np.int64)
    huge = np.where(instances > 0, instances + 2**45, 0)
    assert typical_object_size(huge) == typical_object_size(instances)


def test_instances_follow_the_probability_threshold():
    """The threshold a user sets decides which pixels are objects in instances too, in a slice and
    in a volume, while the seeds stay where they were."""
    from scipy import ndimage

    from napari_pix2pix.labels.encodings import InstanceEncoding

    probabilities = touching_nuclei_probabilities(bridge=0.02)
    nuclei = probabilities[0] < 0.5
    ring = ndimage.binary_dilation(nuclei, iterations=3) & ~nuclei  # object probability 0.4 around them
    probabilities[0][ring], probabilities[2][ring] = 0.6, 0.4 - probabilities[1][ring]
    encoding = InstanceEncoding()
    for planes, depth in ((probabilities, 1), (np.repeat(probabilities[:, None], 5, axis=1), 5)):
        as_is = encoding.instances(planes, Cleanup())
        lower = encoding.instances(planes, Cleanup(threshold=0.35))
        assert (as_is > 0).sum() == nuclei.sum() * depth
        assert (lower > 0).sum() == (nuclei | ring).sum() * depth
        assert lower.max() == as_is.max() == 2  # the same two nuclei, grown
