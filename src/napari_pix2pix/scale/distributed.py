"""Training on several processes, GPUs or machines, with PyTorch's own DistributedDataParallel.

``torchrun --nproc-per-node N -m napari_pix2pix train ...`` starts N copies of the command; torchrun
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address), which is how a copy
knows it is one of a group. Each process samples its own patches, gradients are averaged across the
group by DDP, and the processes agree every step on whether to stop and how far the run is (so the
learning-rate schedule and the end are the same everywhere); only rank 0 prints and writes files.
NCCL is used between GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Group | None:
    """The group torchrun started this process in, or None for an ordinary single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    try:
        return Group(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise InputError("WORLD_SIZE is set but RANK is not: start distributed training with torchrun") from None


def is_secondary() -> bool:
    """Whether this process is a rank other than 0 of a torchrun group: it checks its input like
    rank 0 (all ranks end together on bad input) but leaves the messages to rank 0."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0
    except ValueError:
        return False


def is_group_failure(error: BaseException) -> bool:
    """Whether ``error`` says the group broke (another rank stopped or was killed)."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        words in text for words in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo")
    )


def join(group: Group, device: torch.device) -> torch.device:
    """Join the process group (NCCL for CUDA, gloo otherwise); the device this rank trains on."""
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrapper(group: Group | None, device: torch.device) -> Callable[[nn.Module], nn.Module]:
    """How the training steps wrap a network for its forward pass: DDP in a group, as it is alone."""
    if group is None:
        return lambda module: module

    def wrap(module: nn.Module) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    return wrap


def agree(values: list[float], device: torch.device) -> list[float]:
    """The largest of each value over the group (stop flags, the run's progress)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def leave(wait: bool = True) -> None:
    """Wait for every rank (when ``wait``: all ranks ended the run together), then leave the group.

    A rank that failed in the middle of the run leaves without waiting: the others are in a step's
    collective, not at a barrier, and learn of it from the broken connection instead of hanging."""
    if not dist.is_initialized():
        return
    try:
        if wait:
            dist.barrier()
    finally:
        dist.destroy_process_group()
