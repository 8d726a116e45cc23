"""Choosing the compute device and its precision."""

from __future__ import annotations

import contextlib
import os

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


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op elsewhere."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def amp_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on ``device`` (the GPU's free memory, or the machine's available
    memory); None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:  # Linux: what can be had without swapping, page cache included (MemFree leaves the cache out)
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says memory ran out: a ``MemoryError``, or torch's out-of-memory
    ``RuntimeError`` (a GPU's "out of memory", the CPU allocator's "can't allocate memory")."""
    message = str(error)
    return isinstance(error, MemoryError) or "out of memory" in message or "can't allocate memory" in message


def batch_bytes(pixels: int, width: int, training: bool) -> int:
    """About the bytes one sample of ``pixels`` pixels (times channels) takes through a network of
    first-layer ``width``: float32 activations of the first level times a factor for the deeper
    levels, gradients and buffers: 40 when training (measured on the CPU: 34–38 for the U-Net at
    widths 4 and 16, as peak memory per extra patch), 10 when predicting."""
    return pixels * width * 4 * (40 if training else 10)


def check_batch_memory(
    what: str, batch: int, pixels: int, width: int, device: torch.device, training: bool, option: str
) -> None:
    """Refuse a batch that cannot fit: ``batch`` samples of ``pixels`` pixels through a network of
    first-layer ``width`` (``batch_bytes`` each), before the allocation fails (or the system kills
    the process)."""
    per_sample = batch_bytes(pixels, width, training)
    available = available_memory(device)
    if available is not None and batch * per_sample > available:
        largest = max(1, available // per_sample)
        raise InputError(
            f"{what}: {batch} at a time need about {batch * per_sample / 1e9:,.1f} GB, more than the "
            f"{available / 1e9:,.1f} GB free on {device.type}; use a smaller {option} (at most about {largest})"
        )
