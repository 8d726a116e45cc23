"""Input checks at the public boundary, written once and used by training, prediction, the command
line and the widgets alike. Each raises ``InputError`` naming the input and what was expected."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import InputError


def check_numeric(dtype: np.dtype, what: str = "the image") -> None:
    """Refuse arrays that do not hold plain numbers (bool, complex, strings, objects)."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(bool) or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"{what} must hold numbers, not {dtype}")


def check_finite(array: np.ndarray, where: str = "the image") -> None:
    """Refuse a float array holding NaN or infinite values, or values beyond float32's range
    (the network computes in float32)."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise InputError(f"{where} has {bad} NaN or infinite pixels; replace them (e.g. with 0) first")
        if array.dtype.itemsize > 4 and array.size and np.abs(array).max() > np.finfo(np.float32).max:
            raise InputError(f"{where} has values beyond ±3.4e38, which 32-bit floats cannot hold; rescale it first")


def check_at_least(name: str, value: int, minimum: int = 1) -> None:
    """Refuse a count below ``minimum``; ``name`` is shown as the user sees it."""
    if int(value) < minimum:
        raise InputError(f"{name.replace('_', ' ')} must be at least {minimum}, got {value}")


def check_fraction(name: str, value: float) -> None:
    """Refuse a fraction outside [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise InputError(f"{name} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class ImageLayout:
    """Where the spatial axes and the channels of an image are."""

    spatial_shape: tuple[int, ...]  # (Y, X) or (Z, Y, X)
    channels: int
    has_channel_axis: bool


def image_layout(
    shape: tuple[int, ...],
    labels_shape: tuple[int, ...] | None = None,
    in_channels: int | None = None,
    min_side: int = 1,
) -> ImageLayout:
    """Read the axes of an image from its shape alone (a lazy array is not loaded).

    Parameters
    ----------
    shape : tuple of int
        The image's shape: (Y, X), (Z, Y, X), or either with a trailing channel axis.
    labels_shape : tuple of int, optional
        Training: the spatial shape the image must have; a trailing axis beyond it is channels.
    in_channels : int, optional
        Prediction: the channels the model expects; with more than one, the last axis is channels.
    min_side : int
        Prediction: the shortest slice side the model's tiles are made of. A trailing axis of a 3D
        or 4D shape shorter than it, or of at most 4, cannot be a slice side: it is channels, and
        refused for a model trained on single-channel images.

    Raises
    ------
    InputError
        When the shape fits neither reading, or its channels are not the model's; one line says which.
    """
    shape = tuple(int(n) for n in shape)
    if 0 in shape:
        raise InputError(f"the image is empty: its shape {shape} has an axis of length 0")
    if labels_shape is not None:
        labels_shape = tuple(int(n) for n in labels_shape)
        if shape == labels_shape:
            has_channels = False
        elif shape[:-1] == labels_shape:
            has_channels = True
        else:
            raise InputError(
                f"image shape {shape} does not match labels shape {labels_shape}: "
                "the labels must cover the image pixel for pixel (same Y, X and Z sizes)"
            )
    else:
        has_channels = bool(in_channels and in_channels > 1)
        looks_like_channels = len(shape) in (3, 4) and (shape[-1] <= 4 or shape[-1] < min_side)
        if in_channels == 1 and looks_like_channels:
            kind = "an RGB/RGBA or " if shape[-1] in (3, 4) else "a "
            raise InputError(
                f"the image has shape {shape}: its last axis looks like {kind}{shape[-1]}-channel image, but the "
                "model was trained on single-channel images; convert it to greyscale (or pick one channel), "
                "or train a model on such images"
            )
        if in_channels is not None and in_channels > 1 and not looks_like_channels and shape[-1] != in_channels:
            raise InputError(
                f"the model was trained on {in_channels}-channel images (channels on the last axis), but this image "
                f"has shape {shape}, with no channel axis; give it the model's channels, or use a model trained on "
                "single-channel images"
            )
    spatial = shape[:-1] if has_channels else shape
    channels = shape[-1] if has_channels else 1
    if in_channels is not None and has_channels and channels != in_channels:
        raise InputError(
            f"the model was trained on {in_channels}-channel images but this image has {channels} "
            f"(shape {shape}); convert it to match (e.g. greyscale) or train a model on such images"
        )
    if len(spatial) not in (2, 3):
        hint = "; an RGB image needs a model trained on RGB images" if shape and shape[-1] in (3, 4) else ""
        raise InputError(
            f"expected a 2D image or a 3D stack (optionally with a last channel axis), got shape {shape}{hint}"
        )
    return ImageLayout(spatial, channels, has_channels)


def check_labels(labels: npt.ArrayLike) -> np.ndarray:
    """Return labels as an int64 array, refusing float, empty, negative or wrongly shaped labels."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"labels must be integers (a Labels layer or an integer mask), got {labels.dtype}; "
            "convert a probability map with a threshold first"
        )
    if not labels.any():
        raise InputError("the labels are all zero: paint at least one object (or scribble) before training")
    if labels.min() < 0:
        raise InputError("labels must not be negative")
    if labels.dtype == np.uint64 and labels.max() > np.iinfo(np.int64).max:
        raise InputError(
            f"label value {labels.max()} is too large (at most {np.iinfo(np.int64).max}); renumber the labels "
            "(e.g. skimage.segmentation.relabel_sequential)"
        )
    if labels.ndim not in (2, 3):
        raise InputError(f"labels must be 2D or a 3D stack, got shape {labels.shape}")
    return labels.astype(np.int64, copy=False)


def check_pixel_size(pixel_size: Iterable[float]) -> tuple[float, float]:
    """A (y, x) physical pixel size: two positive finite numbers; ``InputError`` otherwise."""
    try:
        y, x = (float(v) for v in pixel_size)
    except (TypeError, ValueError):
        raise InputError(f"a pixel size is two numbers (y, x), got {pixel_size!r}") from None
    if not (math.isfinite(y) and math.isfinite(x) and y > 0 and x > 0):
        raise InputError(f"a pixel size must be two positive numbers, got {pixel_size!r}")
    return y, x


def check_voxel_size(voxel_size: Iterable[float]) -> tuple[float, float, float]:
    """A (z, y, x) voxel size: three positive finite numbers; ``InputError`` otherwise."""
    try:
        z, y, x = (float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise InputError(f"a voxel size is three numbers (z, y, x), got {voxel_size!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in (z, y, x)):
        raise InputError(f"a voxel size must be three positive numbers, got {voxel_size!r}")
    return z, y, x


class PixelSizesDifferWarning(UserWarning):
    """The training images do not share one pixel size."""


class VoxelSizesDifferWarning(PixelSizesDifferWarning):
    """The training stacks do not share one voxel size."""


def common_pixel_size(sizes: Sequence[Sequence[float] | None]) -> tuple[float, float] | None:
    """The (y, x) pixel size a model trained on images of ``sizes`` (None: unknown) stores: the first
    known one, with a ``PixelSizesDifferWarning`` when another known one differs from it by more
    than 2 % (the model cannot know one scale then)."""
    known = [check_pixel_size(size) for size in sizes if size is not None]
    first = _first_of(known, "pixel sizes", PixelSizesDifferWarning)
    return None if first is None else (first[0], first[1])


def common_voxel_size(sizes: Sequence[Sequence[float] | None]) -> tuple[float, float, float] | None:
    """``common_pixel_size`` for (z, y, x) voxel sizes: the first known one, with a
    ``VoxelSizesDifferWarning`` when another known one differs from it by more than 2 % on any axis."""
    known = [check_voxel_size(size) for size in sizes if size is not None]
    first = _first_of(known, "voxel sizes", VoxelSizesDifferWarning)
    return None if first is None else (first[0], first[1], first[2])


def sizes_differ(size: Sequence[float], other: Sequence[float], tolerance: float = 0.02) -> bool:
    """Whether two pixel or voxel sizes differ by more than ``tolerance`` (a fraction) on any axis."""
    return any(abs(a / b - 1) > tolerance for a, b in zip(size, other))


def _first_of(known: Sequence[tuple[float, ...]], what: str, kind: type[UserWarning]) -> tuple[float, ...] | None:
    """The first of ``known``, warning (``kind``) when another differs from it by more than 2 %."""
    if not known:
        return None
    first = known[0]
    others = [size for size in known[1:] if sizes_differ(size, first)]
    if others:
        shown = ", ".join(" × ".join(f"{v:g}" for v in size) for size in [first, *others])
        warnings.warn(
            kind(
                f"the training images' {what} differ ({shown}); the model stores the first, "
                f"{' × '.join(f'{v:g}' for v in first)}: rescale the images to one {what[:-1]} for a model that "
                "knows its scale"
            ),
            stacklevel=3,
        )
    return first
