"""Choosing the compute device and its precision."""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")

#: Channels-last tensors on CUDA: mixed-precision convolutions run on tensor cores without
#: transposes (``benchmarks/bench_training.py --layouts`` measures both layouts; docs/benchmarks.md).
CHANNELS_LAST_ON_CUDA = True


#: Tiles per forward pass when none is asked for: on a GPU one 512² slice's tiles are too little
#: work per launch (``benchmarks/bench_prediction.py --batches`` measures it; docs/benchmarks.md).
TILE_BATCH = {"cuda": 16}
DEFAULT_TILE_BATCH = 4


def tile_batch(device: torch.device, asked: int | None) -> int:
    """Tiles per forward pass on ``device``: ``asked``, or the device's default when None or 0."""
    return asked if asked else TILE_BATCH.get(device.type, DEFAULT_TILE_BATCH)


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout networks and their inputs take on ``device``."""
    if device.type == "cuda" and CHANNELS_LAST_ON_CUDA:
        return torch.channels_last
    return torch.contiguous_format


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise InputError(f"device must be one of {DEVICES}, got {name!r}")
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if str(name).startswith("cuda") and not cuda:
        raise InputError("CUDA was chosen but no NVIDIA GPU is usable here; choose 'auto' or 'cpu'")
    if name == "mps" and not mps:
        raise InputError("Apple MPS was chosen but is not available here; choose 'auto' or 'cpu'")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def describe(device: torch.device) -> str:
    """A human name for the device, e.g. 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op elsewhere."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def amp_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
