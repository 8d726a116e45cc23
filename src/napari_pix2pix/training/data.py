"""Turning user arrays into training data: channel layout, validation split, patch sampling.

Everything here takes and returns numpy arrays (or torch tensors for batches), with no hidden state.
Input checks live in ``checks.py``, annotation kinds in ``labels/encodings.py``, the intensity
normalisation that travels with a model in ``models/normalisation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ..checks import check_fraction, check_numeric, image_layout
from ..errors import InputError
from ..labels.encodings import IGNORE


def as_channels_last(
    image: npt.ArrayLike, labels_shape: tuple[int, ...] | None = None, in_channels: int | None = None
) -> np.ndarray:
    """Return ``image`` as (Z, Y, X, C), checking it against the labels or the model
    (see ``checks.image_layout`` for how the axes are read)."""
    image = np.asarray(image)
    check_numeric(image.dtype)
    layout = image_layout(image.shape, labels_shape, in_channels)
    if not layout.has_channel_axis:
        image = image[..., None]
    if len(layout.spatial_shape) == 2:
        image = image[None]
    return image


def annotated_slices(labels: np.ndarray) -> np.ndarray:
    """Indices of the (Z, Y, X) slices holding annotations; unannotated slices are skipped."""
    return np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))


# ----------------------------------------------------------------------------- training data


@dataclass
class SliceSet:
    """Normalised image slices (N, C, H, W) float32 and class targets (N, H, W) int64 (``IGNORE`` = skip),
    with per-pixel loss weights (N, H, W) float32 when the boundary weight map is on."""

    images: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


VALIDATION_CONTEXT = 64  # rows of image kept above a held-out band, so it is predicted with context


def split_train_validation(
    images: np.ndarray, targets: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[SliceSet, SliceSet | None]:
    """Hold out about ``val_fraction`` of the annotated data for validation.

    A stack with enough slices (slices × fraction ≥ 1) gives up whole slices, chosen at random. A
    smaller stack or a single image would lose too much that way, so every slice stays in training
    and gives up the band of rows at its bottom holding ``val_fraction`` of its annotated pixels:
    those labels are hidden from training (their image stays visible as context) and scored
    instead. Returns (train, validation) ``SliceSet``s; validation is None for a fraction of 0 or
    when nothing could be held out.
    """
    check_fraction("validation fraction", val_fraction)
    if val_fraction == 0:
        return SliceSet(images, targets), None
    n = images.shape[0]
    if n * val_fraction >= 1:  # (so n ≥ 2, as the fraction is below 1)
        n_val = min(n - 1, round(n * val_fraction))
        order = rng.permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        return SliceSet(images[train], targets[train]), SliceSet(images[val], targets[val])
    train_targets, val_targets = targets.copy(), np.full_like(targets, IGNORE)
    height = targets.shape[1]
    top = height
    for i, slice_targets in enumerate(targets):
        per_row = (slice_targets != IGNORE).sum(axis=1)
        from_bottom = np.cumsum(per_row[::-1])
        if from_bottom[-1] == 0:
            continue
        cut = height - (int(np.searchsorted(from_bottom, val_fraction * from_bottom[-1])) + 1)
        if cut <= 0 or not per_row[:cut].any():
            continue  # holding out would leave this slice nothing to train on
        val_targets[i, cut:], train_targets[i, cut:] = slice_targets[cut:], IGNORE
        top = min(top, cut)
    if top == height:
        return SliceSet(images, targets), None
    # Only the rows around the held-out bands need predicting when validating.
    rows = slice(max(0, top - VALIDATION_CONTEXT), height)
    return SliceSet(images, train_targets), SliceSet(images[:, :, rows], val_targets[:, rows])


def _fits(images: np.ndarray, weights: np.ndarray | None, device: torch.device) -> bool:
    """Whether training slices (their int16 targets and float32 loss weights with them) take under an
    eighth of the GPU's memory."""
    total = torch.cuda.get_device_properties(device).total_memory
    return images.nbytes * 1.5 + (0 if weights is None else weights.nbytes) < total / 8


class PatchSampler:
    """Draws random training patches placed so that annotated pixels fall in the network's output.

    Slices smaller than the patch are mirror-padded (the padding is not annotated). Targets cover
    the whole input patch; the trainer ``crop``s them to the network's output, as the origin did.
    """

    def __init__(
        self,
        data: SliceSet,
        patch_size: int,
        output_size: int,
        rng: np.random.Generator,
        device: torch.device | None = None,
    ):
        self.patch_size = patch_size
        self.output_size = output_size
        self.rng = rng
        images, targets, weights = data.images, data.targets, data.weights
        pad_y = max(0, patch_size - images.shape[2])
        pad_x = max(0, patch_size - images.shape[3])
        if pad_y or pad_x:
            pads = ((0, 0), (0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
            images = np.pad(images, pads, mode="reflect" if min(images.shape[2:]) > 1 else "edge")
            targets = np.pad(targets, pads[:1] + pads[2:], constant_values=IGNORE)
            weights = None if weights is None else np.pad(weights, pads[:1] + pads[2:], constant_values=0)
        self.images = np.ascontiguousarray(images)
        self.targets = np.ascontiguousarray(targets)
        self.weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
        # On a GPU the slices live on the device when they fit easily, and patches are cut there:
        # no host sampling, pinning or copy per step (which made the training loop host-bound).
        self.on_host = (  # the same memory, as tensors
            torch.from_numpy(self.images),
            torch.from_numpy(self.targets),
            None if self.weights is None else torch.from_numpy(self.weights),
        )
        self.on_device: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        if device is not None and device.type == "cuda" and _fits(self.images, self.weights, device):
            narrow = self.targets.astype(np.int16) if self.targets.max(initial=0) < 2**15 else self.targets
            self.on_device = (
                torch.from_numpy(self.images).to(device),
                torch.from_numpy(narrow).to(device),
                None if self.weights is None else torch.from_numpy(self.weights).to(device),
            )
        # Patches are centred near annotated pixels, so sparse scribbles are seen as often as dense labels.
        self.annotated = np.argwhere(self.targets != IGNORE)
        if len(self.annotated) == 0:
            raise InputError(
                "no annotated pixels are left for training; annotate more or lower the validation fraction"
            )

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch: images (B, C, P, P) float32, targets (B, P, P) int64 and, when the data has them,
        loss weights (B, P, P) float32 (else None)."""
        p, half_out = self.patch_size, self.output_size // 2
        _, _, height, width = self.images.shape
        picks = self.annotated[self.rng.integers(0, len(self.annotated), batch_size)]
        jitter = self.rng.integers(-half_out, half_out + 1, size=(batch_size, 2))
        tops = np.clip(picks[:, 1] - p // 2 + jitter[:, 0], 0, height - p)
        lefts = np.clip(picks[:, 2] - p // 2 + jitter[:, 1], 0, width - p)
        windows = list(zip(picks[:, 0], tops, lefts))
        images, targets, weights = self.on_device if self.on_device is not None else self.on_host

        def cut(source: torch.Tensor) -> torch.Tensor:
            return torch.stack([source[i, ..., y : y + p, x : x + p] for i, y, x in windows])

        return cut(images), cut(targets).long(), None if weights is None else cut(weights)


# ----------------------------------------------------------------------------- volumes (3D networks)


@dataclass
class Volume:
    """One training volume: normalised image (C, Z, Y, X) float32, class targets (Z, Y, X) int64
    (``IGNORE`` where not annotated), the annotated voxels patches are centred on (N, 3), and the
    loss's weight map when there is one."""

    image: np.ndarray
    targets: np.ndarray
    centres: np.ndarray
    weights: np.ndarray | None = None  # (Z, Y, X) float32 boundary weight map of the loss, if any


@dataclass
class VolumeSet:
    """The training (or validation) volumes."""

    volumes: list[Volume]

    def __len__(self) -> int:
        return sum(int((v.targets != IGNORE).any(axis=(1, 2)).sum()) for v in self.volumes)
