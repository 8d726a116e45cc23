import numpy as np
import pytest
import torch

from napari_pix2pix.labels.encodings import IGNORE
from napari_pix2pix.training.augment import augment_batch


def blocky_batch(seed=0, batch=4, size=64):
    """Targets made of 8×8 blocks of classes 0/1 with some IGNORE blocks, and images equal to them."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.integers(-1, 2, (batch, size // 8, size // 8)))
    targets = torch.nn.functional.interpolate(coarse[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return targets[:, None].float().clamp_min(0), targets


def test_augmentation_moves_image_and_labels_together():
    rng = np.random.default_rng(0)
    targets = torch.from_numpy((rng.random((4, 8, 8)) > 0.5).astype(np.int64))
    targets = torch.nn.functional.interpolate(targets[:, None].float(), size=64, mode="nearest")[:, 0].long()
    images = targets[:, None].float()
    generator = torch.Generator().manual_seed(1)
    new_images, new_targets, _ = augment_batch(images, targets, generator, elastic_strength=0.06, intensity=0)
    assert not torch.equal(new_targets, targets)  # something happened
    agreement = ((new_images[:, 0] > 0.5).long() == new_targets).float().mean()
    assert agreement > 0.97
    assert set(new_targets.unique().tolist()) <= {0, 1}


def test_without_warp_zoom_or_intensity_each_patch_is_one_of_the_eight_symmetries():
    images, targets = blocky_batch()
    new_images, new_targets, _ = augment_batch(
        images, targets, torch.Generator().manual_seed(3), elastic_strength=0, intensity=0, zoom=1, noise=0
    )
    for original, image, target in zip(targets, new_images[:, 0], new_targets):
        candidates = [
            torch.rot90(flipped, k, dims=(0, 1)) for flipped in (original, original.flip(1)) for k in range(4)
        ]
        assert any(torch.equal(target, c) for c in candidates)
        assert torch.allclose(image, target.clamp_min(0).float(), atol=1e-5)  # image moved with its labels


def test_unannotated_pixels_stay_unannotated_and_no_new_class_appears():
    images, targets = blocky_batch(seed=1)
    _, new_targets, _ = augment_batch(images, targets, torch.Generator().manual_seed(0), elastic_strength=0.1)
    assert set(new_targets.unique().tolist()) <= {IGNORE, 0, 1}
    assert (new_targets == IGNORE).float().mean().item() == pytest.approx(
        (targets == IGNORE).float().mean().item(), abs=0.05
    )


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    images, targets = blocky_batch(seed=2)
    first = augment_batch(images, targets, torch.Generator().manual_seed(7))
    second = augment_batch(images, targets, torch.Generator().manual_seed(7))
    third = augment_batch(images, targets, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], third[0])


def test_intensity_changes_the_image_but_not_the_labels():
    images, targets = blocky_batch(seed=3)
    images = images * 0.5 + 0.25
    plain = augment_batch(images, targets, torch.Generator().manual_seed(4), elastic_strength=0, intensity=0)
    jittered = augment_batch(images, targets, torch.Generator().manual_seed(4), elastic_strength=0, intensity=0.3)
    assert torch.equal(plain[1], jittered[1])
    assert not torch.allclose(plain[0], jittered[0])


def test_zoom_shows_objects_at_other_sizes():
    targets = torch.zeros(64, 32, 32, dtype=torch.long)
    targets[:, 12:20, 12:20] = 1  # an 8×8 object in the middle of each patch
    images = targets[:, None].float()
    _, zoomed, _ = augment_batch(
        images, targets, torch.Generator().manual_seed(0), elastic_strength=0, intensity=0, zoom=2.0, noise=0
    )
    areas = (zoomed == 1).sum(dim=(1, 2)).float()
    assert areas.min() < 64 * 0.6 and areas.max() > 64 * 1.6  # shrunk and magnified, up to 2× across


def test_loss_weights_move_with_the_targets():
    images, targets = blocky_batch(seed=5)
    weights = targets.float() * 3 + 1  # a weight map that reads its class
    _, new_targets, new_weights = augment_batch(images, targets, torch.Generator().manual_seed(1), weights=weights)
    assert new_weights is not None and new_weights.shape == new_targets.shape
    assert torch.equal(new_weights, new_targets.float() * 3 + 1)


def test_volume_augmentation_moves_every_slice_of_a_sample_with_its_labels():
    from napari_pix2pix.training.volumes import augment_volumes

    images2d, targets2d = blocky_batch(seed=2, batch=3, size=32)
    depth = 6
    targets = targets2d[:, None].repeat(1, depth, 1, 1)  # (B, Z, Y, X): every slice alike
    targets[:, 0] = targets2d.flip(-1)  # but the first, so a flip along z shows
    images = targets[:, None].float().clamp_min(0)  # (B, 1, Z, Y, X) equal to the labels
    plain = augment_volumes(images, targets, torch.Generator().manual_seed(5), intensity=0, noise=0)[:2]
    for original, image, target in zip(targets, plain[0][:, 0], plain[1]):
        first_or_last = [target[0], target[-1]]
        moved = [torch.rot90(f, k, dims=(0, 1)) for f in (original[0], original[0].flip(1)) for k in range(4)]
        assert any(torch.equal(t, c) for t in first_or_last for c in moved)  # one symmetry, z maybe flipped
        assert torch.allclose(image, target.clamp_min(0).float(), atol=1e-5)
    warped_images, warped, _ = augment_volumes(
        images, targets, torch.Generator().manual_seed(6), intensity=0, noise=0, elastic_strength=0.06, zoom=1.25
    )
    assert not torch.equal(warped, plain[1])
    assert set(warped.unique().tolist()) <= {IGNORE, 0, 1}
    # One in-plane transform per sample: the slices that were alike stay alike.
    middle = warped[:, 1:-1]
    assert all(torch.equal(s[1], s[i]) for s in middle for i in range(len(s)))
    agreement = ((warped_images[:, 0] > 0.5).long() == warped.clamp_min(0)).float().mean()
    assert agreement > 0.97


def test_volume_weights_follow_the_labels():
    from napari_pix2pix.training.volumes import augment_volumes

    _, targets2d = blocky_batch(seed=3, batch=2, size=32)
    targets = targets2d[:, None].repeat(1, 4, 1, 1)
    images = targets[:, None].float().clamp_min(0)
    weights = 1 + 9 * (targets == 1).float()  # heavy where the class is 1
    _, moved, moved_weights = augment_volumes(
        images, targets, torch.Generator().manual_seed(2), elastic_strength=0.06, zoom=1.25, weights=weights
    )
    assert moved_weights is not None and moved_weights.shape == moved.shape
    assert torch.equal(moved_weights == 10, moved == 1)


def test_volume_contrast_scales_each_sample_by_one_gain_within_its_range():
    """3D patches are multiplied by a gain between 1/contrast and contrast, one per sample, so a
    model does not learn one volume's brightness; the geometry is that of the same draw without it."""
    from napari_pix2pix.training.volumes import VOLUME_CONTRAST, augment_volumes

    _, targets2d = blocky_batch(seed=4, batch=6, size=16)
    targets = targets2d[:, None].repeat(1, 4, 1, 1)
    images = targets[:, None].float().clamp_min(0) + 0.5
    plain = augment_volumes(images, targets, torch.Generator().manual_seed(3), intensity=0, noise=0)
    scaled = augment_volumes(images, targets, torch.Generator().manual_seed(3), intensity=0, noise=0, contrast=1.25)
    assert torch.equal(plain[1], scaled[1])
    gains = scaled[0].flatten(1) / plain[0].flatten(1)
    assert torch.allclose(gains, gains[:, :1].expand_as(gains))  # one gain per sample
    assert ((gains[:, 0] > 0.8 - 1e-6) & (gains[:, 0] < 1.25 + 1e-6)).all()
    assert gains[:, 0].std() > 0.02  # the samples differ
    assert VOLUME_CONTRAST > 1  # the training loop's 3D augmentation uses it
