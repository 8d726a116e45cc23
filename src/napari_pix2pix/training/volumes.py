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
import torch.nn.functional as F

from ..errors import InputError
from ..labels.encodings import IGNORE, InstanceEncoding, LabelEncoding
from ..labels.postprocess import typical_object_size
from ..models.normalisation import Normalisation
from ..models.trained import TrainedModel
from ..prediction.reading import VolumeGeometry
from ..prediction.settings import PredictionSettings
from ..prediction.tiling import mirrored_indices
from ..prediction.volume import iter_slab_probabilities, mirrored_slab
from .augment import SYMMETRIES, gaussian_field, sampling_grid
from .binning import bin_image, bin_labels, binned_voxel_size, plan_binning
from .config import PER_IMAGE, TrainingConfig
from .data import Volume, VolumeSet, annotated_slices
from .evaluation import ValidationScore
from .preparation import PreparedData, as_pairs, boundary_weight, checked_pair, encoding_for, pooled_normalisation
from .weightmap import volume_boundary_weights

# In-plane elastic warp (coarse-grid displacement, fraction of the patch side) and zoom range of the
# 3D augmentation: see docs/benchmarks.md, Quality in 3D.
VOLUME_ELASTIC = 0.0
VOLUME_ZOOM = 1.0
#: Every 3D training patch's intensities are multiplied by a gain between 1/this and this. Without it
#: a 3D U-Net trained 5 minutes on the ovule nuclei lost most objects when the held-out slices came
#: 0.8× or 1.25× as contrasted (object F1 0.6 → 0.14–0.39; 0 at 0.6× and 1.6×): it had learned the
#: training volume's brightness. With it, the mean F1 over 0.6–1.6× rose 0.26 → 0.48 (three seeds;
#: 0.62 → 0.55 at 1×, docs/benchmarks.md, Quality in 3D). 1.6 made the models insensitive but
#: over-segmenting (F1 0.40 at 1×).
VOLUME_CONTRAST = 1.25
#: Before each validation of a 3D network its batch-norm statistics are recomputed over this many
#: batches of unaugmented training patches (``steps.refresh_batch_norm_statistics``). With the moving
#: average of the augmented batches, the validation Dice of a 3D U-Net swung between 0.1 and 0.88 from
#: one epoch to the next, so the best weights were chance; with it the curve climbs steadily and the
#: ovule nuclei's 3D object F1 rose on three seeds, 0.49 → 0.59 (docs/benchmarks.md, Quality in 3D).
VOLUME_STATISTICS_BATCHES = 16
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
    source_size = _object_size(pairs, encoding) if resume is None else None  # at the stacks' own pixels
    binning = _binning(config, resume, source_size)
    voxel_size = binned_voxel_size(config.voxel_size, binning) if config.voxel_size is not None else None
    train, validation = [], []
    weight = boundary_weight(encoding, config)
    for volume, lab in pairs:
        normalised = np.ascontiguousarray(np.moveaxis(normalisation.for_image(volume).apply(volume), -1, 0))
        normalised = bin_image(normalised, binning)
        lab = bin_labels(lab, binning, encoding.zero_means_unannotated)
        targets, held = _split_slices(encode_volume(encoding, lab), config.val_fraction)
        weights = (  # the loss's boundary weight map (weightmap.py), in 3D with physical distances
            volume_boundary_weights(targets, encoding.object_classes, weight, voxel_size) if weight > 0 else None
        )
        train.append(Volume(normalised, targets, _centres(targets, rng), weights))
        if held is not None:
            validation.append(Volume(normalised, held, np.zeros((0, 3), np.int64)))
    if resume is not None:
        object_size = resume.object_size
    else:  # measured again on the binned labels only when they were binned
        object_size = source_size if binning == 1 else _object_size(pairs, encoding, binning)
    return PreparedData(
        encoding,
        normalisation,
        VolumeSet(train),
        VolumeSet(validation) if validation else None,
        in_channels,
        object_size,
        binning,
    )


def _object_size(pairs: list[tuple[np.ndarray, np.ndarray]], encoding: LabelEncoding, binning: int = 1) -> float | None:
    """The typical object diameter (pixels) in the annotated slices, after binning."""
    unannotated = encoding.zero_means_unannotated
    slices = [bin_labels(lab[s : s + 1], binning, unannotated)[0] for _, lab in pairs for s in annotated_slices(lab)]
    found = [o for o in map(encoding.objects, slices) if o is not None]
    return typical_object_size(found) if found else None


def _binning(config: TrainingConfig, resume: TrainedModel | None, object_size: float | None) -> int:
    """The in-plane binning of a run: the model's it builds on, the configuration's, else planned
    from the voxel size and the objects' ``object_size`` (``binning.plan_binning``)."""
    if resume is not None:
        if config.binning not in (None, resume.binning):
            raise InputError(
                f"binning {config.binning} is not the {resume.binning} of the model this run builds on, which keeps "
                "its own; leave the binning automatic, or train a new model"
            )
        return resume.binning
    if config.binning is not None:
        return config.binning
    return plan_binning(config.voxel_size, object_size)


class VolumePatchSampler:
    """Random (z, y, x) patches centred on annotated voxels: images mirrored past the volume's ends,
    targets ``IGNORE`` there (nothing is learned from mirrored voxels)."""

    def __init__(self, data: VolumeSet, patch: tuple[int, int, int], rng: np.random.Generator, device: torch.device):
        self.volumes = [v for v in data.volumes if len(v.centres)]
        weights = np.array([len(v.centres) for v in self.volumes], np.float64)
        self.choice = weights / weights.sum()
        self.patch, self.rng, self.device = patch, rng, device

    def _cut(self, volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        centre = volume.centres[self.rng.integers(len(volume.centres))]
        jitter = self.rng.integers(-(np.array(self.patch) // 4), np.array(self.patch) // 4 + 1)
        starts = centre + jitter - np.array(self.patch) // 2
        shape = volume.targets.shape
        index = [mirrored_indices(int(s), int(s) + p, n) for s, p, n in zip(starts, self.patch, shape)]
        image = volume.image[np.ix_(np.arange(volume.image.shape[0]), *index)]  # one gather of the patch
        targets = volume.targets[np.ix_(*index)]  # a copy already (advanced indexing)
        outside = [(np.arange(s, s + p) < 0) | (np.arange(s, s + p) >= n) for s, p, n in zip(starts, self.patch, shape)]
        targets[outside[0]] = IGNORE
        targets[:, outside[1]] = IGNORE
        targets[:, :, outside[2]] = IGNORE
        weights = volume.weights[np.ix_(*index)] if volume.weights is not None else None
        return image, targets, weights

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch: images (B, C, Z, Y, X) float32, targets (B, Z, Y, X) int64, and the loss's
        weights (B, Z, Y, X) float32 when the volumes have a weight map (else None)."""
        picks = self.rng.choice(len(self.volumes), size=batch_size, p=self.choice)
        cut = [self._cut(self.volumes[i]) for i in picks]
        images = torch.from_numpy(np.stack([c[0] for c in cut])).to(self.device)
        targets = torch.from_numpy(np.stack([c[1] for c in cut])).to(self.device)
        maps = [c[2] for c in cut if c[2] is not None]
        if len(maps) < len(cut):
            return images, targets, None
        return images, targets, torch.from_numpy(np.stack(maps)).to(self.device)


def augment_volumes(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    intensity: float = 0.1,
    noise: float = 0.02,
    elastic_strength: float = 0.0,
    zoom: float = 1.0,
    weights: torch.Tensor | None = None,
    contrast: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random flips along z, then one in-plane transform per sample applied to all its slices (a flip
    or 90° turn of the square, and, when asked, a zoom between 1/``zoom`` and ``zoom`` and the elastic
    warp of ``augment_batch``), then brightness, contrast, gamma and noise of the images, each sample
    its own, and last a gain between 1/``contrast`` and ``contrast`` (log-uniform); the targets and
    the loss's ``weights`` (B, Z, Y, X), if given, follow the geometry (nearest neighbour)."""
    batch, channels, depth, height, width = images.shape
    flip_z = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip_z.view(-1, 1, 1, 1, 1).to(images.device), images.flip(2), images)
    targets = torch.where(flip_z.view(-1, 1, 1, 1).to(targets.device), targets.flip(1), targets)
    if weights is not None:
        weights = torch.where(flip_z.view(-1, 1, 1, 1).to(weights.device), weights.flip(1), weights)
    # The eight symmetries of the square; only the flips (0, 2, 4, 6) for a patch that is not square.
    choices = torch.arange(len(SYMMETRIES)) if height == width else torch.tensor([0, 2, 4, 6])
    symmetry = SYMMETRIES[choices[torch.randint(0, len(choices), (batch,), generator=generator)]]
    if zoom > 1:
        factors = torch.exp((2 * torch.rand(batch, generator=generator) - 1) * math.log(zoom))
        symmetry = symmetry * factors.view(batch, 1, 1)
    coarse = torch.randn(batch, 2, 3, 3, generator=generator) * (2 * elastic_strength)
    grid = sampling_grid(symmetry.to(images.device), coarse.to(images.device), height, width, elastic_strength > 0)
    grid = grid.repeat_interleave(depth, dim=0)  # (B·Z, Y, X, 2): one transform for all slices of a sample
    planes = images.transpose(1, 2).reshape(batch * depth, channels, height, width)
    planes = F.grid_sample(planes, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    images = planes.reshape(batch, depth, channels, height, width).transpose(1, 2)
    labels = targets.reshape(batch * depth, 1, height, width).float()
    labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="border", align_corners=True)
    targets = labels.reshape(batch, depth, height, width).round().long().clamp_min(IGNORE)
    if weights is not None:
        moved = weights.reshape(batch * depth, 1, height, width)
        moved = F.grid_sample(moved, grid, mode="nearest", padding_mode="border", align_corners=True)
        weights = moved.reshape(batch, depth, height, width).contiguous()
    random = torch.rand((batch, 4), generator=generator).to(images.device)
    gain = 1 + intensity * (2 * random[:, 0] - 1)
    offset = intensity * (2 * random[:, 1] - 1)
    gamma = torch.exp(intensity * (2 * random[:, 2] - 1))
    view = (-1,) + (1,) * (images.dim() - 1)
    images = images.clamp_min(0) ** gamma.view(view) * gain.view(view) + offset.view(view)
    images = images + noise * random[:, 3].view(view) * gaussian_field(images, generator)
    if contrast > 1:
        factors = torch.exp((2 * torch.rand(batch, generator=generator) - 1) * math.log(contrast))
        images = images * factors.view(view).to(images.device)
    return images.contiguous(), targets.contiguous(), weights


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
