"""Rescaling an image before the network: to the training images' pixel size when both are known,
or so that its objects have the size the model learned (measured on the middle slice)."""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

import numpy as np
import torch

from ..checks import check_pixel_size, check_voxel_size, sizes_differ
from ..labels.postprocess import Cleanup, typical_object_size
from ..models.trained import TrainedModel
from .reading import VolumeGeometry, read_slice
from .settings import AUTO_SIZE, PredictionSettings
from .streaming import stream_with

SIZE_TOLERANCE = 1.25  # object sizes within this factor of the trained size are predicted as they are
SIZE_AGREES = 1.1  # the estimate refines until the measured size is within this factor (docs/benchmarks.md)
SMALLEST, LARGEST = 0.25, 4.0  # the scale factors allowed


class PixelSizeWarning(UserWarning):
    """The image's pixels are not the size of the training images'."""

    def __init__(self, model: TrainedModel, pixel_size: tuple[float, float]):
        assert model.pixel_size is not None
        super().__init__(
            f"the image's pixels are {_size(pixel_size)}, the model was trained on pixels of "
            f"{_size(model.pixel_size)}; rescale to the model's pixel size (--match-pixel-size, or the "
            "Predict widget's option) for results at the size the model learned"
        )


class RescalingNote(UserWarning):
    """An image was rescaled before the network, and the result scaled back (said, not an error)."""


class ObjectSizeNote(RescalingNote):
    """The image was rescaled so that its objects have the size the model learned (said, not an error)."""

    def __init__(self, model: TrainedModel, factor: float):
        assert model.object_size is not None
        super().__init__(
            f"objects ≈ {model.object_size / factor:.0f} px across, the model learned {model.object_size:.0f} px: "
            f"predicting at {factor:.2g}× (to turn this off: --object-size none, or untick 'Rescale to the "
            "object size the model learned')"
        )


class VoxelSizeNote(RescalingNote):
    """A stack was rescaled per axis to the voxel size a 3D model learned (said, not an error)."""

    def __init__(self, model: TrainedModel, voxel_size: tuple[float, float, float] | None, factors: tuple[float, ...]):
        scaling = f"predicting at {' × '.join(f'{f:.3g}' for f in factors)} and scaling the result back"
        if voxel_size is not None and model.voxel_size is not None:
            super().__init__(
                f"the image's voxels are {_size(voxel_size)} (z × y × x), the model learned "
                f"{_size(model.voxel_size)}: {scaling}"
            )
        else:  # a binned model, and a voxel size unknown: taken as the training volumes'
            super().__init__(
                f"the model learned its volumes binned {model.binning}× in y and x; the image's voxel size is "
                f"{'not known' if voxel_size is None else _size(voxel_size)}, taken as the training volumes': "
                f"{scaling} (give the voxel size, --voxel-size, if it differs)"
            )


def voxel_factors(model: TrainedModel, voxel_size: tuple[float, float, float] | None) -> tuple[float, ...] | None:
    """How much to scale a stack along z, y and x to the model's voxel size (each within the allowed
    scale factors), or None when they agree within 2 % on every axis. When either voxel size is
    unknown the stack is taken to have the training volumes' own: None, or for a model whose volumes
    were binned (``model.binning``) 1/binning in y and x."""
    if voxel_size is None or model.voxel_size is None:
        return None if model.binning == 1 else (1.0, 1 / model.binning, 1 / model.binning)
    voxel_size = check_voxel_size(voxel_size)
    if not sizes_differ(voxel_size, model.voxel_size):
        return None
    return tuple(bounded(mine / learned) for mine, learned in zip(voxel_size, model.voxel_size))


def _size(pixel_size: tuple[float, ...]) -> str:
    return " × ".join(f"{v:g}" for v in pixel_size)


def rescaling(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    stop: threading.Event | None = None,
) -> float:
    """The factor an image is scaled by before the network: to the training images' pixel size when
    both are known and ``settings.match_pixel_size`` (else a ``PixelSizeWarning`` if they differ),
    or to the object size the model learned (``scale_factor``)."""
    ratio = pixel_size_ratio(model, settings.pixel_size)
    if ratio is not None and settings.match_pixel_size:
        return _capped(ratio, "the image's pixels are {:.3g}× the size of the model's")  # known, not estimated
    if ratio is not None:
        assert settings.pixel_size is not None
        warnings.warn(PixelSizeWarning(model, settings.pixel_size), stacklevel=3)
    return scale_factor(model, image, geometry, settings, stop)


def pixel_size_ratio(model: TrainedModel, pixel_size: tuple[float, float] | None) -> float | None:
    """How much bigger the image's pixels are than the training images' (the mean over y and x),
    or None when either is unknown or they agree within 2 %."""
    if pixel_size is None or model.pixel_size is None:
        return None
    y, x = check_pixel_size(pixel_size)
    ratio = float(np.sqrt(y / model.pixel_size[0] * x / model.pixel_size[1]))
    return None if abs(ratio - 1) <= 0.02 else ratio


def scale_factor(
    model: TrainedModel,
    image: Any,
    geometry: VolumeGeometry,
    settings: PredictionSettings,
    stop: threading.Event | None = None,
) -> float:
    """How much to scale ``image`` so its objects have the size the model learned (see
    ``PredictionSettings.object_size``)."""
    object_size = settings.object_size
    if object_size is None or model.object_size is None:
        return 1.0
    if object_size != AUTO_SIZE:
        return _capped(model.object_size / float(object_size), "the model learned objects {:.3g}× the size given")
    plane = read_slice(image, geometry.n_slices // 2, geometry, model)
    factor, best = 1.0, (math.inf, 1.0)  # (how far the measured size was from the model's, at which factor)
    for _ in range(3):  # the first estimate can be rough when the sizes differ a lot: refine it
        shape = scaled_shape(geometry, factor)
        scaled = plane if factor == 1.0 else resize(plane, shape)
        ((_, probabilities),) = stream_with(model, [(0, scaled)], shape, settings, stop)
        size = typical_object_size(model.encoding.instances(probabilities, Cleanup()))
        if size is None:
            break
        correction = model.object_size / size
        if abs(math.log(correction)) >= best[0]:
            # Rescaling moved the objects' size away from the model's (e.g. membranes of EM, whose
            # regions fragment as they are magnified): the estimate is not to be trusted. Keep the
            # factor that came closest (1 if that was the image as it is).
            factor = best[1]
            break
        best = (abs(math.log(correction)), factor)
        if 1 / SIZE_AGREES <= correction <= SIZE_AGREES:
            break
        factor = bounded(factor * correction)
    if 1 / SIZE_TOLERANCE <= factor <= SIZE_TOLERANCE:
        return 1.0
    warnings.warn(ObjectSizeNote(model, factor), stacklevel=3)
    return factor


class RescaleLimitWarning(UserWarning):
    """The image would need more rescaling than is allowed; it is rescaled as far as allowed."""


def _capped(factor: float, why: str) -> float:
    """``factor`` within the allowed scale factors, with a warning that says so when it was not."""
    allowed = bounded(factor)
    if allowed != factor:
        warnings.warn(
            RescaleLimitWarning(
                f"{why.format(factor)}, but rescaling is limited to {SMALLEST:g}×–{LARGEST:g}×: predicting at "
                f"{allowed:g}×, so objects stay {max(factor / allowed, allowed / factor):.2g}× off the size the "
                "model learned"
            ),
            stacklevel=4,
        )
    return allowed


def bounded(factor: float) -> float:
    """``factor`` within the scale factors allowed."""
    return float(min(max(factor, SMALLEST), LARGEST))


def scaled_shape(geometry: VolumeGeometry, factor: float) -> tuple[int, int]:
    """A slice's (height, width) scaled by ``factor``."""
    return max(1, round(geometry.height * factor)), max(1, round(geometry.width * factor))


def resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (C, H, W) float32 array resized to (C, *shape), bilinear with antialiasing."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    resized = torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return resized[0].numpy()
