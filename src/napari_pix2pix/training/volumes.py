"""Training data for 3D networks: whole volumes, partly annotated, cut into (z, y, x) patches.

A slice the user did not annotate is ignored by the loss (its targets are ``IGNORE``), not taken as
background, so a stack with a few painted slices trains a 3D network: patches are drawn around
annotated voxels and see the unannotated slices around them as context. Validation holds out the
last annotated slices of each volume (at least one, when there are two or more). Instance labels
are encoded in 3D within runs of consecutive annotated slices, so nuclei touching along z are kept
apart by the boundary class as well as nuclei touching in-plane.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from ..labels.encodings import IGNORE, InstanceEncoding, LabelEncoding
from ..labels.postprocess import typical_object_size
from ..models.normalisation import Normalisation
from ..models.trained import TrainedModel
from ..prediction.reading import VolumeGeometry
from ..prediction.settings import PredictionSettings
from ..prediction.tiling import mirrored_indices
from ..prediction.volume import iter_slab_probabilities, mirrored_slab
from .config import PER_IMAGE, TrainingConfig
from .data import Volume, VolumeSet, annotated_slices
from .evaluation import ValidationScore
from .preparation import PreparedData, as_pairs, checked_pair, encoding_for, pooled_normalisation

MAX_CENTRES = 200_000  # annotated voxels kept per volume to centre patches on (a random subset)


def encode_volume(encoding: LabelEncoding, labels: np.ndarray) -> np.ndarray:
    """Class targets (Z, Y, X) of labels (Z, Y, X): annotated slices encoded, the others ``IGNORE``;
    instances get their boundaries in 3D within each run of consecutive annotated slices."""
    targets = np.full(labels.shape, IGNORE, np.int64)
    slices = annotated_slices(labels)
    if not isinstance(encoding, InstanceEncoding):
        if len(slices):
            targets[slices] = encoding.encode(labels[slices])
        return targets
    from skimage.segmentation import find_boundaries

    runs = np.split(slices, np.flatnonzero(np.diff(slices) > 1) + 1) if len(slices) else []
    for run in runs:
        block = labels[run[0] : run[-1] + 1]
        classes = (block > 0).astype(np.int64)
        boundary = find_boundaries(block, mode="inner") if len(run) > 1 else find_boundaries(block[0], mode="inner")
        classes[(boundary if len(run) > 1 else boundary[None]) & (block > 0)] = 2
        targets[run[0] : run[-1] + 1] = classes
    return targets


def _centres(targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    centres = np.argwhere(targets != IGNORE)
    if len(centres) > MAX_CENTRES:
        centres = centres[rng.choice(len(centres), MAX_CENTRES, replace=False)]
    return centres


def _split_slices(targets: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Training and validation targets of one volume: the last annotated slices held out."""
    slices = np.flatnonzero((targets != IGNORE).any(axis=(1, 2)))
    held = min(len(slices) - 1, max(1, math.ceil(len(slices) * fraction))) if fraction > 0 else 0
    if held < 1:
        return targets, None
    validation = np.full_like(targets, IGNORE)
    validation[slices[-held:]] = targets[slices[-held:]]
    train = targets.copy()
    train[slices[-held:]] = IGNORE
    return train, validation


def prepare_volumes(
    image: Any, labels: Any | None, config: TrainingConfig, resume: TrainedModel | None, rng: np.random.Generator
) -> PreparedData:
    """Check the pairs and turn them into normalised volumes with class targets (see the module)."""
    given = as_pairs(image, labels)
    many = len(given) > 1
    pairs = [checked_pair(i, lab, config, f" of pair {n}" if many else "") for n, (i, lab) in enumerate(given, 1)]
    in_channels = pairs[0][0].shape[-1]
    encoding = encoding_for(pairs, config, resume)
    normalisation: Normalisation = (
        resume.normalisation if resume is not None else pooled_normalisation(pairs, config.normalisation == PER_IMAGE)
    )
    train, validation = [], []
    for volume, lab in pairs:
        normalised = np.ascontiguousarray(np.moveaxis(normalisation.for_image(volume).apply(volume), -1, 0))
        targets, held = _split_slices(encode_volume(encoding, lab), config.val_fraction)
        train.append(Volume(normalised, targets, _centres(targets, rng)))
        if held is not None:
            validation.append(Volume(normalised, held, np.zeros((0, 3), np.int64)))
    objects = [encoding.objects(lab[s]) for _, lab in pairs for s in annotated_slices(lab)]
    found = [o for o in objects if o is not None]
    object_size = resume.object_size if resume is not None else (typical_object_size(found) if found else None)
    return PreparedData(
        encoding,
        normalisation,
        VolumeSet(train),
        VolumeSet(validation) if validation else None,
        in_channels,
        object_size,
    )


class VolumePatchSampler:
    """Random (z, y, x) patches centred on annotated voxels: images mirrored past the volume's ends,
    targets ``IGNORE`` there (nothing is learned from mirrored voxels)."""

    def __init__(self, data: VolumeSet, patch: tuple[int, int, int], rng: np.random.Generator, device: torch.device):
        self.volumes = [v for v in data.volumes if len(v.centres)]
        weights = np.array([len(v.centres) for v in self.volumes], np.float64)
        self.choice = weights / weights.sum()
        self.patch, self.rng, self.device = patch, rng, device

    def _cut(self, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
        centre = volume.centres[self.rng.integers(len(volume.centres))]
        jitter = self.rng.integers(-(np.array(self.patch) // 4), np.array(self.patch) // 4 + 1)
        starts = centre + jitter - np.array(self.patch) // 2
        shape = volume.targets.shape
        index = [mirrored_indices(int(s), int(s) + p, n) for s, p, n in zip(starts, self.patch, shape)]
        image = volume.image[:, index[0]][:, :, index[1]][:, :, :, index[2]]
        targets = volume.targets[np.ix_(*index)].copy()
        outside = [(np.arange(s, s + p) < 0) | (np.arange(s, s + p) >= n) for s, p, n in zip(starts, self.patch, shape)]
        targets[outside[0]] = IGNORE
        targets[:, outside[1]] = IGNORE
        targets[:, :, outside[2]] = IGNORE
        return image, targets

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        """A batch: images (B, C, Z, Y, X) float32, targets (B, Z, Y, X) int64, no weights."""
        picks = self.rng.choice(len(self.volumes), size=batch_size, p=self.choice)
        cut = [self._cut(self.volumes[i]) for i in picks]
        images = torch.from_numpy(np.stack([c[0] for c in cut])).to(self.device)
        targets = torch.from_numpy(np.stack([c[1] for c in cut])).to(self.device)
        return images, targets, None


def augment_volumes(
    images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, intensity: float = 0.1, noise: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips along z, y and x, in-plane 90° turns (square patches), then brightness, contrast,
    gamma and noise of the images, each sample its own; the targets follow the geometry."""
    out_images, out_targets = [], []
    for image, target in zip(images, targets):
        flips = [axis for axis in (1, 2, 3) if torch.rand(1, generator=generator).item() < 0.5]
        if flips:
            image, target = image.flip(flips), target.flip([a - 1 for a in flips])
        turns = int(torch.randint(0, 4, (1,), generator=generator))
        if turns and image.shape[-1] == image.shape[-2]:
            image, target = image.rot90(turns, (2, 3)), target.rot90(turns, (1, 2))
        out_images.append(image)
        out_targets.append(target)
    images, targets = torch.stack(out_images), torch.stack(out_targets)
    count = images.shape[0]
    random = torch.rand((count, 4), generator=generator).to(images.device)
    gain = 1 + intensity * (2 * random[:, 0] - 1)
    offset = intensity * (2 * random[:, 1] - 1)
    gamma = torch.exp(intensity * (2 * random[:, 2] - 1))
    view = (-1,) + (1,) * (images.dim() - 1)
    images = images.clamp_min(0) ** gamma.view(view) * gain.view(view) + offset.view(view)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device_generator = torch.Generator(images.device).manual_seed(seed)
    images = images + noise * torch.randn(images.shape, generator=device_generator, device=images.device)
    return images.contiguous(), targets.contiguous()


def evaluate_volumes(
    model: TrainedModel, validation: VolumeSet, device: torch.device | str
) -> tuple[float | None, float | None]:
    """Validation loss (cross-entropy) and Dice of the objects (every class but the background) on
    the held-out slices, predicted by the network in 3D with the volume around them as context."""
    settings = PredictionSettings(device=str(device), batch_size=2)
    score = ValidationScore(model.encoding.background)
    for volume in validation.volumes:
        slices = np.flatnonzero((volume.targets != IGNORE).any(axis=(1, 2)))
        if not len(slices):
            continue
        channels, depth, height, width = volume.image.shape
        geometry = VolumeGeometry(depth, height, width, channels, True)
        predicted = iter_slab_probabilities(
            model, partial(mirrored_slab, volume.image), geometry, settings, range(int(slices[0]), int(slices[-1]) + 1)
        )
        for z, probabilities in predicted:
            score.add(probabilities, volume.targets[z])
    return score.result()
