"""Planning a run from its data: 2D or 3D (``training_dims``), the training patch (``training_patch_size``
for slices, ``volume_patch`` for volumes; ``patch_plan`` for either) and the batch and patch that fit
the device's free memory (``fit_in_memory``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from torch import nn

from ..errors import InputError
from ..models.networks import SizeContract, get_architecture
from ..models.trained import TrainedModel
from ..models.unet3d import UNet3D
from ..prediction.tiling import round_up
from .config import DEFAULT_BATCH, TrainingConfig, choose_dims
from .data import SliceSet, VolumeSet

#: The share of the free memory an automatic batch and patch are chosen to fill. The estimate
#: (``devices.batch_bytes``) is the training peak measured on the CPU for the U-Net; the rest is
#: room for what it leaves out: the allocator's fragmentation and cuDNN's workspaces on a GPU, the
#: validation and preview passes, the training data itself and other programs (napari, a browser)
#: whose memory grows while the run goes on. Values the user chose are refused only beyond all of it.
MEMORY_SHARE = 0.75
#: The smallest side an automatic patch shrinks to (rounded up to the network's multiple): a
#: network of 4 poolings takes 16² patches, but so little context teaches it little; a run that
#: only fits below this is refused instead (a smaller width fits more).
MIN_AUTO_PATCH = 32


def training_patch_size(sizes: SizeContract, requested: int, slice_shape: tuple[int, ...], name: str) -> int:
    """The training patch for network ``name``: the requested size, shrunk for small images
    (same-size networks only)."""
    if not sizes.padded:
        minimum = sizes.min_input_size()
        if requested < minimum:
            raise InputError(f"patch size {requested} is too small for the {name} network; use at least {minimum}")
        return requested
    multiple = sizes.size_multiple
    if requested % multiple:
        raise InputError(f"patch size must be a multiple of {multiple} for this {name} network, got {requested}")
    fits = round_up(max(slice_shape), multiple)
    return min(requested, fits)


def training_dims(config: TrainingConfig, pairs: list[Any], resume: TrainedModel | None) -> tuple[int, str]:
    """2 or 3 for a run, and why: a resumed model's own, ``config.dims`` when chosen, else
    ``choose_dims``. A 3D run trains the 3D U-Net (``config.model`` is set to it)."""
    shapes = [tuple(np.shape(labels)) for _, labels in pairs]
    if resume is not None:
        dims, reason = resume.config.dims, f"{resume.config.dims}D, as the model it builds on"
    elif config.dims == "2d":
        dims, reason = 2, "2D: chosen"
    elif config.dims == "3d":
        dims, reason = 3, "3D: chosen"
    elif get_architecture(config.model).dims == 3:
        dims, reason = 3, "3D: the 3D U-Net was chosen"
    elif config.model != "unet":
        dims, reason = 2, f"2D: {config.model} trains slice by slice"
    else:
        dims, reason = choose_dims(shapes, config.voxel_size)
    if dims == 3 and any(len(s) != 3 for s in shapes):
        raise InputError("3D training needs stacks (Z, Y, X) with their labels; train this image in 2D")
    if dims == 3 and config.model not in ("unet", "unet-3d"):
        raise InputError(f"{config.model} trains slice by slice; for volumes use the U-Net, or train in 2D")
    config.model = "unet-3d" if dims == 3 else config.model
    if dims == 2 and get_architecture(config.model).dims == 3:
        raise InputError("the 3D U-Net trains on volumes; choose 3D, or another network for 2D")
    return dims, reason


def volume_patch(network: UNet3D, config: TrainingConfig, data: VolumeSet) -> tuple[int, int, int]:
    """The (z, y, x) training patch: the network's multiples, no larger than the volumes need."""
    depth = max(v.targets.shape[0] for v in data.volumes)
    side = max(max(v.targets.shape[1:]) for v in data.volumes)
    z = round_up(min(config.architecture.z_patch_size, depth), network.z_multiple)
    yx = round_up(min(config.patch, side), network.size_multiple)
    return z, yx, yx


def patch_plan(
    network: nn.Module, config: TrainingConfig, train: SliceSet | VolumeSet
) -> tuple[tuple[int, ...], PatchSteps]:
    """The training patch to start from, (Y, X) for slices or (Z, Y, X) for volumes, and how it may shrink."""
    if isinstance(train, VolumeSet):
        unet = cast(UNet3D, network)
        smallest = round_up(MIN_AUTO_PATCH, unet.size_multiple)
        return volume_patch(unet, config, train), PatchSteps(unet.size_multiple, smallest, unet.z_multiple)
    sizes = cast(SizeContract, network)
    side = training_patch_size(sizes, config.patch, train.images.shape[2:], config.model)
    smallest = max(sizes.min_input_size(), round_up(MIN_AUTO_PATCH, sizes.size_multiple))
    # A valid-convolution network's output shrinks faster than its input: only its batch may shrink.
    return (side, side), PatchSteps(sizes.size_multiple, smallest, fixed=not sizes.padded)


@dataclass(frozen=True)
class PatchSteps:
    """How an automatic training patch shrinks: its sides Y and X halve, staying multiples of
    ``multiple`` and at least ``minimum``; then a volume's depth Z halves, staying a multiple of
    ``z_multiple``. A ``fixed`` patch does not shrink."""

    multiple: int
    minimum: int
    z_multiple: int = 1
    fixed: bool = False

    def smaller(self, patch: tuple[int, ...]) -> tuple[int, ...] | None:
        """The next smaller patch, or None when ``patch`` is the smallest."""
        if self.fixed:
            return None
        *z, y, x = patch
        half_y, half_x = (side // 2 // self.multiple * self.multiple for side in (y, x))
        if min(half_y, half_x) >= max(self.minimum, 1):
            return (*z, half_y, half_x)
        depth = z[0] // 2 // self.z_multiple * self.z_multiple if z else 0
        return (depth, y, x) if depth >= self.z_multiple else None


def fit_in_memory(
    per_sample: Callable[[tuple[int, ...]], int],
    free: int | None,
    batch: int | None,
    patch: tuple[int, ...],
    patch_chosen: bool,
    steps: PatchSteps,
    device: str,
) -> tuple[int, tuple[int, ...], str]:
    """The batch and patch to train with, and a note saying what was shrunk ('' when nothing was).

    ``batch`` None is automatic, from ``DEFAULT_BATCH``; ``patch`` is the patch to start from
    ((Y, X) or (Z, Y, X)), the user's own when ``patch_chosen``. ``per_sample(patch)`` estimates
    the bytes one sample takes (``devices.batch_bytes``), ``free`` is the bytes free on ``device``
    (None: unknown, and nothing changes). An automatic batch halves down to 1 first, then an
    automatic patch halves (``steps``), until the batch fits ``MEMORY_SHARE`` of ``free``. Values the
    user chose never change: when everything was chosen it is refused only beyond all the free memory.
    Raises ``InputError``, one line, when even the smallest batch and patch allowed do not fit.
    """
    start = batch if batch is not None else DEFAULT_BATCH
    if free is None:
        return start, patch, ""
    automatic = batch is None or not (patch_chosen or steps.fixed)
    budget = free * MEMORY_SHARE if automatic else free
    last = (start, patch)
    for last in _smaller_batches_and_patches(start, patch, batch is None, not patch_chosen, steps):
        if last[0] * per_sample(last[1]) <= budget:
            return last[0], last[1], _shrink_note(start, patch, *last, free, device)
    size, shape = last
    needed, share = size * per_sample(shape), f"{MEMORY_SHARE:.0%} of " if automatic else ""
    if batch is not None and size > 1 and per_sample(shape) <= budget:
        advice = f"use a smaller batch size (at most about {int(budget // per_sample(shape))})"
    elif patch_chosen and replace(steps, fixed=False).smaller(shape) is not None:
        both = " and batch size" if batch is not None and size > 1 else ""
        advice = f"use a smaller patch size{both}, a smaller network width, or another device"
    else:
        advice = "use a smaller network width, another device, or free memory (close other programs)"
    raise InputError(
        f"training {size} patch(es) of {_shape(shape)} at a time needs about {_bytes(needed)}, more than "
        f"{share}the {_bytes(free)} free on {device}; {advice}"
    )


def _smaller_batches_and_patches(
    batch: int, patch: tuple[int, ...], batch_automatic: bool, patch_automatic: bool, steps: PatchSteps
) -> Iterator[tuple[int, tuple[int, ...]]]:
    """(batch, patch) from the largest: the batch halves to 1 first, then the patch halves."""
    yield batch, patch
    while batch_automatic and batch > 1:
        batch //= 2
        yield batch, patch
    while patch_automatic and (smaller := steps.smaller(patch)) is not None:
        patch = smaller
        yield batch, patch


def _shrink_note(
    batch: int, patch: tuple[int, ...], chosen_batch: int, chosen_patch: tuple[int, ...], free: int, device: str
) -> str:
    changes = []
    if chosen_batch != batch:
        changes.append(f"batch {chosen_batch} instead of {batch}")
    if chosen_patch != patch:
        changes.append(f"patch {_shape(chosen_patch)} instead of {_shape(patch)}")
    return f"{' and '.join(changes)}, to fit the {_bytes(free)} free on {device}" if changes else ""


def _shape(patch: tuple[int, ...]) -> str:
    return "×".join(str(side) for side in patch)


def _bytes(count: float) -> str:
    if count >= 1e9:
        return f"{count / 1e9:,.1f} GB"
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"
