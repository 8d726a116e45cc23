"""Shared fixtures: small deterministic data and tiny models, so the suite stays fast on 2 cores."""

import contextlib
import logging

import numpy as np
import pytest
import torch

from napari_pix2pix.labels.encodings import DenseEncoding
from napari_pix2pix.models import ModelConfig, Normalisation, SameSize
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training import TrainingConfig, fit


def tiny_config(**overrides) -> TrainingConfig:
    """A small network and a short run: seconds on a CPU."""
    settings = dict(
        epochs=2,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=32,
        width=4,
        depth=2,
        max_minutes=None,
        device="cpu",
        val_fraction=0.25,
        learning_rate=1e-3,
    )
    settings.update(overrides)
    return TrainingConfig(**settings)


@pytest.fixture(scope="session")
def membranes():
    """A (4, 64, 64) EM-like stack and its membrane labels (1 = membrane, 0 = cell interior)."""
    image, membrane, _ = membrane_volume((4, 64, 64), cell_size=20, seed=3)
    return image, membrane


@pytest.fixture(scope="session")
def tiny_model(membranes):
    image, labels = membranes
    return fit(image, labels, tiny_config())


@pytest.fixture
def blobs():
    """A 2D image with bright discs on a dark background and their instance labels."""
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.uint16)
    for i, (y, x) in enumerate([(12, 12), (12, 40), (40, 20), (45, 48), (30, 30)], start=1):
        labels[disk((y, x), 7, shape=labels.shape)] = i
    image = (labels > 0) * 150.0 + 30 + rng.normal(0, 5, labels.shape)
    return image.astype(np.float32), labels


class ThresholdNetwork(SameSize, torch.nn.Module):
    """A fixed 'network' predicting class 1 wherever the (normalised) image is above 0.5: its output
    is known exactly, so prediction tests can check what comes out, not just its shape."""

    def forward(self, x):
        return torch.cat([0.5 - x[:, :1], x[:, :1] - 0.5], dim=1) * 20


def threshold_model(classes=(0, 1)) -> TrainedModel:
    config = ModelConfig("unet", 1, 2, width=1, depth=1)
    return TrainedModel(config, ThresholdNetwork(), DenseEncoding(classes), Normalisation((0.0,), (1.0,)), 32)


def two_slices_of_discs() -> np.ndarray:
    """Two slices with discs at different places (values 0 and 1)."""
    from skimage.draw import disk

    stack = np.zeros((2, 48, 48), np.float32)
    for z, centres in enumerate([[(10, 10), (30, 34)], [(12, 30), (36, 12), (36, 36)]]):
        for centre in centres:
            stack[z][disk(centre, 6, shape=(48, 48))] = 1
    return stack


@pytest.fixture(autouse=True)
def autosave_folder(tmp_path_factory, monkeypatch):
    """Models kept when a test's viewer closes go to a temporary folder, not the user's data folder."""
    folder = tmp_path_factory.mktemp("autosave")
    monkeypatch.setenv("NAPARI_PIX2PIX_AUTOSAVE", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # results of lazy images
    return folder


@pytest.fixture(autouse=True)
def dask_scheduler_setting():
    """Each test starts and ends with dask's scheduler setting as it was: distributed's
    ``Client.close`` leaves ``scheduler="dask.distributed"`` set while any other default client is
    alive, and a later test's dask array would then ask for a client that is gone."""
    import dask

    with dask.config.set(scheduler=dask.config.get("scheduler", None)):
        yield


@pytest.fixture
def files(tmp_path):
    """A folder with image.tif (a 3×48×48 EM-like stack) and labels.tif (membranes 255, cells 0), for
    command-line tests. Label values 0 and 255, so predicted values cannot be mistaken for class indices."""
    import tifffile

    image, membranes, _ = membrane_volume((3, 48, 48), cell_size=16, seed=2)
    tifffile.imwrite(tmp_path / "image.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", membranes.astype(np.uint8) * 255, photometric="minisblack")
    return tmp_path


@contextlib.contextmanager
def local_cluster():
    """A local Dask cluster of 2 single-threaded worker processes and a client to it, both ready."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR, env={"OMP_NUM_THREADS": "1"},
        ) as cluster,
        Client(cluster, set_as_default=False) as client,  # later tests' dask arrays keep their scheduler
    ):  # fmt: skip
        client.wait_for_workers(2)
        yield cluster, client
