import pytest
import torch

from napari_pix2pix.devices import autocast, describe, resolve_device
from napari_pix2pix.errors import InputError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_auto_picks_the_best_device_present():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_cuda_without_a_gpu_is_explained():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="no NVIDIA GPU"):
            resolve_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without Apple MPS")
def test_mps_without_apple_silicon_is_explained():
    with pytest.raises(InputError, match="MPS"):
        resolve_device("mps")


def test_unknown_device_names_the_choices():
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")


def test_cpu_is_described_with_its_threads_and_runs_in_float32():
    assert describe(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"
    with autocast(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
