"""Planning a run from its data: 2D or 3D (``training_dims``) and the training patch (``training_patch_size``
for slices, ``volume_patch`` for volumes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..models.networks import SizeContract, get_architecture
from ..models.trained import TrainedModel
from ..models.unet3d import UNet3D
from ..prediction.tiling import round_up
from .config import TrainingConfig, choose_dims
from .data import VolumeSet


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
        dims, reason = resume.config.dims, f"{resume.config.dims}D: the model to continue is"
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
