"""The CUDA path (channels-last tensors, mixed precision, pinned copies, losses read one step late):
run where a GPU is present, skipped elsewhere."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_pix2pix.io.modelfile import load_model, save_model
from napari_pix2pix.prediction import predict
from napari_pix2pix.training import EventKind, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.mark.parametrize("architecture", ["unet", "pix2pix"])
def test_training_and_prediction_on_the_gpu(membranes, architecture, tmp_path):
    config = tiny_config(model=architecture, device="cuda", epochs=6, steps_per_epoch=10, patch_size=64, width=8)
    trainer = Trainer(*membranes, config)
    assert trainer.read_late and trainer.sampler.on_device is not None  # patches cut on the GPU
    events = list(trainer.run())
    steps = [e.step for e in events if e.kind == EventKind.STEP]
    assert steps == list(range(1, 61))
    model = trainer.model
    dices = [h["val_dice"] for h in model.history if h["val_dice"] is not None]
    assert max(dices) > 0.6  # it learned
    on_gpu = predict(model, membranes[0][:2], output="probability", device="cuda")
    on_cpu = predict(model, membranes[0][:2], output="probability", device="cpu")
    assert np.abs(on_gpu - on_cpu).mean() < 0.02  # bfloat16 against float32
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    np.testing.assert_array_equal(
        predict(loaded, membranes[0][:2], device="cuda"), predict(model, membranes[0][:2], device="cuda")
    )
