"""The 3D engine: the 3D U-Net and its planning from the voxel size, training on partly annotated
stacks, blockwise prediction, 3D instances, and 3D model files."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from napari_pix2pix import TrainingConfig, fit, load_model, predict, save_model
from napari_pix2pix.errors import InputError
from napari_pix2pix.labels.encodings import IGNORE, InstanceEncoding, make_encoding
from napari_pix2pix.models import ModelConfig, Normalisation, TrainedModel, UNet3D, build_model, plan_z_skip
from napari_pix2pix.prediction import PredictionSettings, volume_geometry
from napari_pix2pix.prediction.volume import iter_volume_probabilities
from napari_pix2pix.training.config import choose_dims
from napari_pix2pix.training.volumes import VOLUME_STATISTICS_BATCHES, encode_volume


def blobs(shape: tuple[int, int, int] = (16, 48, 48), count: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright ellipsoids (3 slices deep, 10 pixels wide) on noise, and their instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for i in range(count):
        z, y, x = rng.integers(3, shape[0] - 3), rng.integers(6, shape[1] - 6), rng.integers(6, shape[2] - 6)
        inside = ((zz - z) / 3.0) ** 2 + ((yy - y) / 5.0) ** 2 + ((xx - x) / 5.0) ** 2 <= 1
        labels[inside & (labels == 0)] = i + 1
    image = (labels > 0) * 0.8 + 0.2 * rng.random(shape)
    return image.astype(np.float32), labels


def test_pooling_is_planned_from_the_voxel_size():
    assert plan_z_skip((0.284, 0.128, 0.128), 4) == 1  # confocal ovule: one in-plane level, then 3D
    assert plan_z_skip((50.0, 4.0, 4.0), 4) == 3  # serial-section EM: z pooled only at the deepest level
    assert plan_z_skip((1.0, 1.0, 1.0), 4) == 0 and plan_z_skip(None, 4) == 0
    network = UNet3D(1, 3, width=4, depth=3, z_skip=1)
    assert network.z_multiple == 4 and network.size_multiple == 8
    assert network.encoder[0][0].kernel_size == (1, 3, 3) and network.encoder[1][0].kernel_size == (3, 3, 3)
    out = network.eval()(torch.zeros(1, 1, 8, 24, 32))
    assert out.shape == (1, 3, 8, 24, 32)


def test_dims_follow_the_data():
    assert choose_dims([(100, 100, 100)], (0.284, 0.128, 0.128))[0] == 3
    assert choose_dims([(30, 512, 512)], (50.0, 4.0, 4.0))[0] == 2  # slices far apart: 2D
    assert choose_dims([(100, 100, 100)], None)[0] == 2  # nothing to judge by
    assert choose_dims([(4, 64, 64)], (1.0, 1.0, 1.0))[0] == 2  # too few slices
    assert "2.2× the pixel size" in choose_dims([(100, 100, 100)], (0.284, 0.128, 0.128))[1]
    from napari_pix2pix.training.planning import training_dims

    stack = [(np.zeros((16, 48, 48)), np.zeros((16, 48, 48)))]
    dims, reason = training_dims(TrainingConfig(model="seed-unet", voxel_size=(0.5, 0.2, 0.2)), stack, None)
    assert (dims, reason) == (2, "2D: seed-unet trains slice by slice")  # auto never refuses a 2D network
    assert training_dims(TrainingConfig(model="unet-3d"), stack, None) == (3, "3D: the 3D U-Net was chosen")
    # levels left open follow the network: 4 for the 2D U-Net, 3 for the 3D one; given ones are kept
    config = TrainingConfig(voxel_size=(0.5, 0.2, 0.2))
    assert config.levels == 4 and training_dims(config, stack, None)[0] == 3 and config.levels == 3
    assert TrainingConfig(model="unet-3d", depth=2).levels == 2


def random_3d_model(depth: int = 2, z_skip: int = 1) -> TrainedModel:
    torch.manual_seed(0)
    config = ModelConfig("unet-3d", 1, 2, 4, depth, z_skip=z_skip)
    network = build_model(config).eval()
    with torch.no_grad():  # batch norms that are not the identity, as after training
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return TrainedModel(config, network, make_encoding(np.array([0, 1])), Normalisation((0.0,), (1.0,)), 32)


def test_blocks_with_a_halo_equal_a_whole_volume_pass():
    model = random_3d_model()
    volume = np.random.default_rng(0).random((20, 70, 90)).astype(np.float32)
    settings = PredictionSettings(device="cpu", tile_size=32, overlap=32)
    geometry = volume_geometry(volume.shape, model)
    blocks = np.stack([p for _, p in iter_volume_probabilities(model, volume, geometry, settings)], axis=1)
    padded = np.pad(volume, ((8, 8), (16, 18), (16, 18)), mode="reflect")  # mirrored context, sides of 4k
    with torch.no_grad():
        whole = torch.softmax(model.network(torch.from_numpy(padded)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(blocks, whole[:, 8:28, 16:86, 16:106], atol=1e-5)


def test_slices_not_annotated_are_ignored_and_instances_are_encoded_in_3d():
    labels = np.zeros((6, 8, 8), np.uint16)
    labels[1:3, 2:6, 2:6] = 1  # one object on slices 1 and 2…
    labels[3:5, 2:6, 2:6] = 2  # …touching another along z on slices 3 and 4; slices 0 and 5 not annotated
    targets = encode_volume(InstanceEncoding(), labels)
    assert (targets[[0, 5]] == IGNORE).all() and (targets[1:5] != IGNORE).all()
    assert (targets[2, 3:5, 3:5] == 2).all() and (targets[3, 3:5, 3:5] == 2).all()  # kept apart along z
    dense = encode_volume(make_encoding(np.array([0, 1])), (labels > 0).astype(np.uint8))
    assert (dense[[0, 5]] == IGNORE).all()


def test_a_stack_with_three_annotated_slices_trains_a_3d_model_that_segments_the_volume(tmp_path):
    image, labels = blobs()
    sparse = np.zeros_like(labels)
    sparse[[3, 8, 12]] = labels[[3, 8, 12]]  # 3 of 16 slices painted
    config = TrainingConfig(
        dims="3d", width=8, depth=2, epochs=12, steps_per_epoch=5, max_minutes=None, batch_size=2,
        patch_size=32, device="cpu", learning_rate=3e-3, val_fraction=0, voxel_size=(0.5, 0.2, 0.2),
    )  # fmt: skip
    model = fit(image, sparse, config)
    assert model.config.architecture == "unet-3d" and model.config.z_skip == 1
    # its batch-norm statistics are those of unaugmented training patches, not the moving average
    norms = [m for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(int(m.num_batches_tracked) == VOLUME_STATISTICS_BATCHES for m in norms)
    found, truth = predict(model, image, "labels", device="cpu") > 0, labels > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.7  # slices never painted included
    instances = predict(model, image, "instances", device="cpu")
    assert instances.dtype == np.uint32 and 5 <= len(np.unique(instances)) - 1 <= 15
    save_model(model, tmp_path / "m3d.pt")
    loaded = load_model(tmp_path / "m3d.pt")
    assert loaded.config == model.config and loaded.voxel_size == (0.5, 0.2, 0.2)
    np.testing.assert_array_equal(predict(loaded, image, "instances", device="cpu"), instances)


def test_3d_training_refuses_what_it_cannot_do():
    image, labels = blobs((8, 32, 32))
    with pytest.raises(InputError, match="needs stacks"):
        fit(image[0], labels[0], TrainingConfig(dims="3d", epochs=1, max_minutes=None))
    with pytest.raises(InputError, match="trains slice by slice"):
        fit(image, labels, TrainingConfig(dims="3d", model="pix2pix", epochs=1, max_minutes=None))
    with pytest.raises(InputError, match="dims must be one of"):
        fit(image, labels, TrainingConfig(dims="4d", epochs=1, max_minutes=None))


def whole_volume_rescaled(model, volume, settings, factors):
    """The reference: the whole volume rescaled (trilinear) to the model's voxels, predicted, and its
    probabilities scaled back (trilinear), all in memory."""
    from napari_pix2pix.prediction.volume import iter_volume_probabilities

    shape = tuple(max(1, round(n * f)) for n, f in zip(volume.shape, factors))
    resize = partial(torch.nn.functional.interpolate, mode="trilinear", align_corners=False)
    scaled = resize(torch.from_numpy(volume)[None, None], size=shape)[0, 0].numpy()
    planes = iter_volume_probabilities(model, scaled, volume_geometry(scaled.shape, model), settings)
    probabilities = torch.from_numpy(np.stack([p for _, p in planes], axis=1))
    back = resize(probabilities[None], size=volume.shape)[0]
    return [back[:, i].numpy() for i in range(len(volume))]


@pytest.mark.parametrize("factors", [(2.0, 1.0, 1.0), (0.5, 1.0, 1.0), (1.6, 0.5, 0.5)])
def test_a_volume_of_other_voxels_is_rescaled_slab_by_slab_as_the_whole_volume_would_be(factors):
    """Rescaling along z (and in-plane) streams, slab by slab, and gives what rescaling the whole
    volume in memory gives; at the model's voxels it is the plain pass."""
    from dataclasses import replace

    from napari_pix2pix.prediction import predict
    from napari_pix2pix.prediction.rescale import VoxelSizeNote
    from napari_pix2pix.prediction.volume import iter_volume_probabilities, rescaled_volume_probabilities

    model = replace(random_3d_model(), voxel_size=(1.0, 0.5, 0.5))
    volume = np.random.default_rng(1).random((10, 40, 44)).astype(np.float32)
    settings = PredictionSettings(device="cpu", tile_size=16)
    geometry = volume_geometry(volume.shape, model)
    same = [p for _, p in rescaled_volume_probabilities(model, volume, geometry, settings, (1.0, 1.0, 1.0))]
    plain = [p for _, p in iter_volume_probabilities(model, volume, geometry, settings)]
    np.testing.assert_allclose(same, plain, atol=1e-5)  # at the model's voxels: the plain pass
    streamed = list(rescaled_volume_probabilities(model, volume, geometry, settings, factors))
    assert [i for i, _ in streamed] == list(range(10))
    np.testing.assert_allclose(
        [p for _, p in streamed], whole_volume_rescaled(model, volume, settings, factors), atol=1e-5
    )
    with pytest.warns(VoxelSizeNote, match=r"learned 1 × 0.5 × 0.5: predicting at 2 × 1 × 1"):
        probabilities = predict(model, volume, "probability", device="cpu", voxel_size=(2.0, 0.5, 0.5))
    assert probabilities.shape == volume.shape and np.isfinite(probabilities).all()


def test_a_z_resampled_volume_reads_only_the_slices_it_needs():
    from napari_pix2pix.prediction.volume import ZResampled

    class Counted(np.ndarray):
        reads: list = []

        def __getitem__(self, key):
            if isinstance(key, slice):
                Counted.reads.append(key.indices(len(self)))
            return np.asarray(self).__getitem__(key)

    volume = np.arange(40, dtype=np.uint8).reshape(40, 1, 1) * np.ones((1, 3, 2), np.uint8)
    resampled = ZResampled(volume.view(Counted), 40, 80)  # slices twice as thin
    assert resampled.shape == (80, 3, 2) and resampled.dtype == np.float32
    part = resampled[20:24]
    assert Counted.reads == [(9, 13, 1)]  # the 4 source slices around them, not the volume
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(volume.astype(np.float32))[None, None], size=(80, 3, 2), mode="trilinear", align_corners=False
    )[0, 0, 20:24].numpy()
    np.testing.assert_allclose(part, expected, atol=1e-6)


def test_binning_is_planned_from_the_voxel_size_and_the_objects_size():
    from napari_pix2pix.training.binning import plan_binning

    assert plan_binning((0.284, 0.128, 0.128), 17.0) == 2  # confocal ovule nuclei: 2.2× apart, 17 px across
    assert plan_binning((0.2, 0.2, 0.2), 30.0) == 1  # isotropic already
    assert plan_binning((0.19, 0.1, 0.1), 30.0) == 2  # 1.9× apart: binned pixels 5 % wider than the slices
    assert plan_binning((0.284, 0.128, 0.128), 12.0) == 1  # small objects keep their pixels
    assert plan_binning(None, 17.0) == 1 and plan_binning((0.284, 0.128, 0.128), None) == 1


def test_binning_averages_the_image_and_keeps_each_blocks_most_frequent_label():
    from napari_pix2pix.training.binning import bin_image, bin_labels

    image = np.arange(2 * 4 * 6, dtype=np.float32).reshape(1, 2, 4, 6)
    binned = bin_image(image, 2)
    assert binned.shape == (1, 2, 2, 3) and binned[0, 0, 0, 0] == np.mean([0, 1, 6, 7])
    assert bin_image(image[:, :, :3, :5], 2).shape == (1, 2, 2, 3)  # a partial block repeats the edge
    labels = np.array([[[5, 5, 0, 7], [5, 0, 0, 7]]], np.uint16)  # (1, 2, 4): two blocks of 2×2
    np.testing.assert_array_equal(bin_labels(labels, 2), [[[5, 0]]])
    # scribbles: 0 is "not annotated", so a block with one annotated pixel takes its value
    np.testing.assert_array_equal(bin_labels(labels, 2, zero_is_unannotated=True), [[[5, 7]]])
    assert bin_labels(np.zeros((1, 2, 2), np.uint8), 2, zero_is_unannotated=True).item() == 0


def test_slab_by_slab_in_plane_rescaling_equals_the_whole_volume_rescaling():
    model = random_3d_model()
    volume = np.random.default_rng(2).random((12, 40, 48)).astype(np.float32)
    settings = PredictionSettings(device="cpu", tile_size=16)
    geometry = volume_geometry(volume.shape, model)
    streamed = [p for _, p in iter_volume_probabilities(model, volume, geometry, settings, in_plane=(0.5, 0.5))]
    assert streamed[0].shape == (2, 40, 48)
    np.testing.assert_allclose(streamed, whole_volume_rescaled(model, volume, settings, (1.0, 0.5, 0.5)), atol=1e-5)


def test_a_model_trained_on_binned_volumes_predicts_at_the_volumes_own_size(tmp_path):
    import warnings

    from napari_pix2pix.prediction.rescale import VoxelSizeNote

    rng = np.random.default_rng(3)
    labels = np.zeros((16, 96, 96), np.uint16)
    zz, yy, xx = np.ogrid[:16, :96, :96]
    for i, (z, y, x) in enumerate(zip(rng.integers(3, 13, 12), rng.integers(11, 85, 12), rng.integers(11, 85, 12))):
        inside = ((zz - z) / 3.0) ** 2 + ((yy - y) / 11.0) ** 2 + ((xx - x) / 11.0) ** 2 <= 1  # 22 px across
        labels[inside & (labels == 0)] = i + 1
    image = ((labels > 0) * 0.8 + 0.2 * rng.random(labels.shape)).astype(np.float32)
    config = TrainingConfig(
        dims="3d", width=8, depth=2, epochs=12, steps_per_epoch=5, max_minutes=None, batch_size=2,
        patch_size=32, device="cpu", learning_rate=3e-3, val_fraction=0, voxel_size=(1.0, 0.2, 0.2),
        annotation="instances",
    )  # fmt: skip
    model = fit(image, labels, config)
    assert model.binning == 2 and model.voxel_size == (1.0, 0.4, 0.4) and model.config.z_skip == 1
    with pytest.warns(VoxelSizeNote, match=r"learned 1 × 0.4 × 0.4: predicting at 1 × 0.5 × 0.5"):
        found = predict(model, image, "labels", device="cpu", voxel_size=(1.0, 0.2, 0.2)) > 0
    assert found.shape == labels.shape
    assert 2 * (found & (labels > 0)).sum() / (found.sum() + (labels > 0).sum()) > 0.7
    save_model(model, tmp_path / "binned.pt")
    loaded = load_model(tmp_path / "binned.pt")
    assert loaded.binning == 2 and torch.load(tmp_path / "binned.pt", weights_only=True)["format_version"] == 5
    with pytest.warns(VoxelSizeNote, match="not known, taken as the training volumes'"):
        unknown = predict(loaded, image, "labels", device="cpu") > 0  # no voxel size: the training volumes'
    np.testing.assert_array_equal(unknown, found)
    with pytest.raises(InputError, match="binning 1 is not the 2 of the model this run builds on"):
        fit(image, labels, replace_config(config, binning=1, epochs=1), resume=loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model that was not binned says nothing for a volume of unknown voxels
        unbinned = fit(image, labels, replace_config(config, binning=1, epochs=1))
        assert unbinned.binning == 1 and unbinned.voxel_size == (1.0, 0.2, 0.2)
        predict(unbinned, image, "labels", device="cpu")


def replace_config(config: TrainingConfig, **changes) -> TrainingConfig:
    from dataclasses import replace

    return replace(config, **changes)
