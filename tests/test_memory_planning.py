"""The training batch and patch chosen from the device's free memory (``planning.fit_in_memory``):
an automatic batch halves to 1 first, then an automatic patch halves; values given are kept or
refused in one line; a run whose smallest batch and patch do not fit is refused in one line."""

import math

import pytest
from conftest import tiny_config

from napari_pix2pix.devices import batch_bytes
from napari_pix2pix.errors import InputError
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training import EventKind, Trainer
from napari_pix2pix.training.config import DEFAULT_BATCH, TrainingConfig
from napari_pix2pix.training.planning import MEMORY_SHARE, PatchSteps, fit_in_memory

PADDED = PatchSteps(multiple=16, minimum=16)  # a padded 2D U-Net of depth 4


def pixels(patch):
    """One byte a pixel: the arithmetic of the tests stays readable."""
    return math.prod(patch)


def free_for(bytes_needed):
    """Free memory whose safety share is exactly ``bytes_needed``."""
    return math.ceil(bytes_needed / MEMORY_SHARE)


def test_the_batch_halves_first_then_the_patch_and_the_note_says_so():
    assert fit_in_memory(pixels, free_for(4 * 128**2), None, (128, 128), False, PADDED, "cpu") == (
        DEFAULT_BATCH, (128, 128), "",
    )  # fmt: skip
    batch, patch, note = fit_in_memory(pixels, free_for(2 * 128**2), None, (128, 128), False, PADDED, "cuda")
    assert (batch, patch) == (2, (128, 128)) and note.startswith("batch 2 instead of 4, to fit the") and "cuda" in note
    batch, patch, note = fit_in_memory(pixels, free_for(64**2), None, (128, 128), False, PADDED, "cpu")
    assert (batch, patch) == (1, (64, 64))
    assert note.startswith("batch 1 instead of 4 and patch 64×64 instead of 128×128, to fit the")
    # Unknown free memory: the defaults as they are
    assert fit_in_memory(pixels, None, None, (128, 128), False, PADDED, "mps") == (DEFAULT_BATCH, (128, 128), "")


def test_a_patch_stays_a_multiple_of_the_network_and_a_volume_shrinks_in_plane_first():
    assert PADDED.smaller((48, 48)) == (16, 16) and PADDED.smaller((16, 16)) is None
    assert PatchSteps(16, 16, fixed=True).smaller((128, 128)) is None
    volume = PatchSteps(multiple=4, minimum=4, z_multiple=2)
    batch, patch, note = fit_in_memory(pixels, free_for(4 * 4 * 4), None, (16, 32, 32), False, volume, "cpu")
    assert (batch, patch) == (1, (4, 4, 4)) and "patch 4×4×4 instead of 16×32×32" in note


def test_values_given_are_kept_or_refused_naming_the_option():
    # A batch given stays; the automatic patch shrinks around it
    assert fit_in_memory(pixels, free_for(4 * 32**2), 4, (128, 128), False, PADDED, "cpu")[:2] == (4, (32, 32))
    # A patch given stays; the automatic batch shrinks
    assert fit_in_memory(pixels, free_for(128**2), None, (128, 128), True, PADDED, "cpu")[:2] == (1, (128, 128))
    with pytest.raises(InputError, match=r"use a smaller patch size, a smaller network width") as refused:
        fit_in_memory(pixels, free_for(64**2), None, (128, 128), True, PADDED, "cpu")
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"use a smaller patch size and batch size"):
        fit_in_memory(pixels, 64**2, 4, (128, 128), True, PADDED, "cpu")
    # Everything given: refused only beyond all the free memory, as before
    assert fit_in_memory(pixels, 4 * 128**2, 4, (128, 128), True, PADDED, "cpu") == (4, (128, 128), "")
    with pytest.raises(InputError, match=r"use a smaller batch size \(at most about 3\)"):
        fit_in_memory(pixels, 3 * 128**2, 4, (128, 128), True, PADDED, "cpu")


def test_when_nothing_fits_one_line_says_what_is_needed_and_what_to_do():
    with pytest.raises(InputError) as refused:
        fit_in_memory(lambda patch: 100 * pixels(patch), 10_000, None, (128, 128), False, PADDED, "cuda")
    message = str(refused.value)
    assert "\n" not in message and "training 1 patch(es) of 16×16" in message
    assert "needs about 26 kB, more than 75% of the 10 kB free on cuda" in message
    assert "smaller network width, another device, or free memory" in message
    # A valid-convolution network (seed U-Net): only its batch may shrink
    with pytest.raises(InputError, match="1 patch\\(es\\) of 256×256"):
        fit_in_memory(pixels, 256**2, None, (256, 256), False, PatchSteps(1, 140, fixed=True), "cpu")


def test_a_small_free_memory_trains_a_smaller_batch_and_patch_and_the_first_event_says_so(monkeypatch):
    image, labels, _ = membrane_volume((2, 64, 64), cell_size=16, seed=2)
    config = tiny_config(batch_size=None, patch_size=None, epochs=1, steps_per_epoch=2, val_fraction=0)
    per_sample = batch_bytes(64 * 64, config.width, training=True)  # the 2D patch: the 64² slices
    free = free_for(per_sample // 2)
    monkeypatch.setattr("napari_pix2pix.training.loop.available_memory", lambda device: free)
    trainer = Trainer(image, labels, config)
    assert trainer.batch_size == 1 and trainer.sampler.patch_size == 32 and trainer.model.patch_size == 32
    events = list(trainer.run())
    assert events[0].kind == EventKind.START
    assert "batch 1 instead of 4 and patch 32×32 instead of 64×64, to fit the" in events[0].message
    assert trainer.sampler.sample(trainer.batch_size)[0].shape == (1, 1, 32, 32) and trainer.steps_done == 2
    # Given explicitly, a batch that cannot fit is refused before anything is allocated
    with pytest.raises(InputError, match=r"use a smaller batch size \(at most about 2\)"):
        Trainer(image, labels, tiny_config(batch_size=64, patch_size=32))
    # An automatic patch stops at 32² (MIN_AUTO_PATCH), not at the network's 4²: below, the run is refused
    free = free_for(per_sample // 8)
    with pytest.raises(InputError, match=r"training 1 patch\(es\) of 32×32 .* use a smaller network width"):
        Trainer(image, labels, config)


def test_a_3d_run_with_little_free_memory_trains_a_batch_of_one(monkeypatch):
    from test_volumes import blobs

    image, labels = blobs((8, 32, 32))
    config = TrainingConfig(
        dims="3d", voxel_size=(1.0, 1.0, 1.0), width=4, depth=2, epochs=1, steps_per_epoch=1, max_minutes=None,
        device="cpu", val_fraction=0,
    )  # fmt: skip
    per_sample = batch_bytes(8 * 32 * 32, config.width, training=True)  # the (8, 32, 32) volume patch
    monkeypatch.setattr("napari_pix2pix.training.loop.available_memory", lambda device: free_for(per_sample))
    trainer = Trainer(image, labels, config)
    assert trainer.batch_size == 1 and trainer.sampler.patch == (8, 32, 32)
    start = next(trainer.run())
    assert start.kind == EventKind.START and "batch 1 instead of 4, to fit the" in start.message
    assert tuple(trainer.sampler.sample(trainer.batch_size)[0].shape) == (1, 1, 8, 32, 32)
