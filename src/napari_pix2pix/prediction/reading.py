"""How an image is read for prediction: its axes (read once, here), its slices one at a time as the
network's normalised input, and the per-image normalisation a volume needs (from a sample of its
slices, so a lazy volume is not read whole)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..checks import check_finite, check_numeric, image_layout
from ..models.trained import TrainedModel

SAMPLE_SLICES = 16  # slices read to find a volume's own percentiles (per-image normalisation)


@dataclass(frozen=True)
class VolumeGeometry:
    """How an image is read: number of slices, slice shape and where the channels are."""

    n_slices: int
    height: int
    width: int
    channels: int
    is_stack: bool

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        yx = (self.height, self.width)
        return (self.n_slices, *yx) if self.is_stack else yx


def volume_geometry(shape: tuple[int, ...], model: TrainedModel) -> VolumeGeometry:
    """The geometry of an image of ``shape`` for ``model``, from the shape alone (a lazy array is
    not loaded). A trailing axis too short to be a slice side for the model (see
    ``checks.image_layout``) is channels, and refused when the model expects other channels."""
    in_channels = model.config.in_channels
    layout = image_layout(shape, in_channels=in_channels, min_side=model.sizes.size_multiple)
    spatial = layout.spatial_shape
    is_stack = len(spatial) == 3
    return VolumeGeometry(spatial[0] if is_stack else 1, spatial[-2], spatial[-1], in_channels, is_stack)


def for_this_image(model: TrainedModel, image: Any, geometry: VolumeGeometry) -> TrainedModel:
    """``model`` with the fixed normalisation for ``image``: under the per-image rule, the image's
    own percentiles, from up to ``SAMPLE_SLICES`` evenly spaced slices (a lazy volume is not read whole)."""
    if not model.normalisation.per_image:
        return model
    picks = np.unique(np.linspace(0, geometry.n_slices - 1, min(SAMPLE_SLICES, geometry.n_slices)).round().astype(int))
    planes = [np.asarray(image[i] if geometry.is_stack else image) for i in picks]
    for index, plane in zip(picks, planes):
        check_numeric(plane.dtype)
        check_finite(plane, f"slice {index}" if geometry.is_stack else "the image")
    sample = np.stack([p if geometry.channels > 1 else p[..., None] for p in planes])
    return replace(model, normalisation=model.normalisation.for_image(sample))


def read_slice(image: Any, index: int, geometry: VolumeGeometry, model: TrainedModel) -> np.ndarray:
    """Slice ``index`` as normalised float32 (C, H, W); only this slice is loaded from a lazy array."""
    plane = np.asarray(image[index] if geometry.is_stack else image)
    check_numeric(plane.dtype)
    check_finite(plane, f"slice {index}" if geometry.is_stack else "the image")
    if geometry.channels == 1:
        plane = plane[..., None]
    return np.ascontiguousarray(np.moveaxis(model.normalisation.apply(plane), -1, 0))


def read_slices(model: TrainedModel, image: Any, geometry: VolumeGeometry) -> Iterator[tuple[int, np.ndarray]]:
    """Every slice of ``image`` in order, as ``read_slice`` gives it, with its index."""
    for index in range(geometry.n_slices):
        yield index, read_slice(image, index, geometry, model)
