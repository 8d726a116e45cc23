"""Turning user arrays into training data: checks, label encoding, normalisation, patch sampling.

Everything here takes and returns numpy arrays (or torch tensors for batches), with no hidden state;
the objects that must travel with a model (``LabelEncoding``, ``Normalisation``) are small dataclasses
that serialise to plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ANNOTATION_KINDS = ("auto", "dense", "sparse", "instances")
IGNORE = -1  # class index of pixels that do not count in the loss
# Classes of the instance encoding: background, object interior, object boundary.
INSTANCE_CLASSES = ("background", "interior", "boundary")


class InputError(ValueError):
    """Bad user input; the message says what is wrong and how to fix it."""


# ----------------------------------------------------------------------------- input checks


def as_channels_last(image, labels_shape: tuple[int, ...] | None = None, in_channels: int | None = None) -> np.ndarray:
    """Return ``image`` as float32 (Z, Y, X, C), checking it against the labels or the model.

    Parameters
    ----------
    image : array-like
        (Y, X), (Z, Y, X), or either with a trailing channel axis.
    labels_shape : tuple, optional
        Spatial shape the image must have (training). A trailing image axis beyond it is channels.
    in_channels : int, optional
        Channels the model expects (prediction). With more than one, the last axis is channels.
    """
    image = np.asarray(image)
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"the image must hold numbers, not {image.dtype}")
    if labels_shape is not None:
        if image.shape == tuple(labels_shape):
            has_channels = False
        elif image.shape[:-1] == tuple(labels_shape):
            has_channels = True
        else:
            raise InputError(
                f"image shape {image.shape} does not match labels shape {tuple(labels_shape)}: "
                "the labels must cover the image pixel for pixel (same Y, X and Z sizes)"
            )
    else:
        has_channels = bool(in_channels and in_channels > 1)
    spatial_ndim = image.ndim - has_channels
    if spatial_ndim not in (2, 3):
        raise InputError(
            f"expected a 2D image or a 3D stack (optionally with a last channel axis), got shape {image.shape}"
        )
    if in_channels is not None:
        channels = image.shape[-1] if has_channels else 1
        if channels != in_channels:
            raise InputError(
                f"the model was trained on {in_channels}-channel images but this image has {channels} "
                f"(shape {image.shape}); convert it to match (e.g. greyscale) or train a model on such images"
            )
    if not has_channels:
        image = image[..., None]
    if spatial_ndim == 2:
        image = image[None]
    return image


def check_finite(image: np.ndarray) -> None:
    """Raise ``InputError`` if a float image holds NaN or infinite pixels."""
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int(np.size(image) - np.isfinite(image).sum())
        raise InputError(f"the image has {bad} NaN or infinite pixels; replace them (e.g. with 0) before training")


def check_labels(labels) -> np.ndarray:
    """Return labels as an int64 array, refusing float, boolean-free empty or negative labels."""
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
    if labels.ndim not in (2, 3):
        raise InputError(f"labels must be 2D or a 3D stack, got shape {labels.shape}")
    return labels.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- label encoding


@dataclass(frozen=True)
class LabelEncoding:
    """How label values map to network classes, and back.

    ``kind`` is ``dense`` (0 is a class on annotated slices), ``sparse`` (0 means "not annotated")
    or ``instances`` (object ids become background / interior / boundary classes).
    ``class_values[i]`` is the label value predicted for class ``i``.
    """

    kind: str
    class_values: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "class_values": [int(v) for v in self.class_values]}

    @classmethod
    def from_dict(cls, d: dict) -> LabelEncoding:
        return cls(str(d["kind"]), tuple(int(v) for v in d["class_values"]))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class index per pixel (int64), ``IGNORE`` where the pixel does not count."""
        if self.kind == "instances":
            return encode_instances(labels)
        lookup = np.full(int(labels.max()) + 1, IGNORE, dtype=np.int64)
        for index, value in enumerate(self.class_values):
            if value < lookup.size:
                lookup[value] = index
        return lookup[labels]


def choose_annotation_kind(labels: np.ndarray) -> str:
    """Guess the annotation kind: many distinct ids mean instance labels, else dense classes."""
    values = np.unique(labels)
    return "instances" if np.count_nonzero(values) > 8 else "dense"


def make_encoding(labels: np.ndarray, kind: str = "auto") -> LabelEncoding:
    """The ``LabelEncoding`` for ``labels`` annotated as ``kind`` (see ``ANNOTATION_KINDS``)."""
    if kind not in ANNOTATION_KINDS:
        raise InputError(f"annotation kind must be one of {ANNOTATION_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = choose_annotation_kind(labels)
    if kind == "instances":
        return LabelEncoding("instances", (0, 1, 1))
    values = [int(v) for v in np.unique(labels)]
    if kind == "sparse":
        values = [v for v in values if v != 0]
        if len(values) < 2:
            raise InputError(
                "sparse (scribble) annotation needs at least two label values, one per class "
                "(e.g. 1 = background, 2 = cells); 0 means 'not annotated'"
            )
    elif len(values) < 2:
        raise InputError(
            "dense annotation needs at least two classes, but every annotated pixel has the value "
            f"{values[0]}; label the background as 0 and the objects with another value"
        )
    return LabelEncoding(kind, tuple(values))


def encode_instances(labels: np.ndarray) -> np.ndarray:
    """Instance ids → 0 background, 1 object interior, 2 object boundary (touching objects split)."""
    from skimage.segmentation import find_boundaries

    classes = (labels > 0).astype(np.int64)
    for z in range(labels.shape[0]) if labels.ndim == 3 else [None]:
        plane = labels[z] if z is not None else labels
        boundary = find_boundaries(plane, mode="inner") & (plane > 0)
        target = classes[z] if z is not None else classes
        target[boundary] = 2
    return classes


def annotated_slices(labels: np.ndarray) -> np.ndarray:
    """Indices of the (Z, Y, X) slices holding annotations; unannotated slices are skipped."""
    return np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))


# ----------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalisation:
    """Per-channel percentile normalisation learned from the training image: ``(x - low) / (high - low)``."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def fit(cls, image: np.ndarray, lower: float = 1.0, upper: float = 99.8) -> Normalisation:
        """Learn the percentiles of a (Z, Y, X, C) image (subsampled: exact enough and fast)."""
        flat = image.reshape(-1, image.shape[-1])
        step = max(1, flat.shape[0] // 2_000_000)
        low, high = np.percentile(flat[::step].astype(np.float32), [lower, upper], axis=0)
        high = np.where(high > low, high, low + 1.0)
        return cls(tuple(float(v) for v in low), tuple(float(v) for v in high))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(…, C) image → float32 scaled so the training range maps to about [0, 1]."""
        low = np.asarray(self.low, dtype=np.float32)
        scale = 1.0 / (np.asarray(self.high, dtype=np.float32) - low)
        scaled = np.array(image, dtype=np.float32)  # a copy, scaled in place: one float32 image at a time
        scaled -= low
        scaled *= scale
        return scaled

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(tuple(float(v) for v in d["low"]), tuple(float(v) for v in d["high"]))


# ----------------------------------------------------------------------------- training data


@dataclass
class SliceSet:
    """Normalised image slices (N, C, H, W) float32 and class targets (N, H, W) int64 (``IGNORE`` = skip)."""

    images: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]


VALIDATION_CONTEXT = 64  # rows of image kept above a held-out band, so it is predicted with context


def split_train_validation(images: np.ndarray, targets: np.ndarray, val_fraction: float, rng: np.random.Generator):
    """Hold out about ``val_fraction`` of the annotated data for validation.

    A stack with enough slices (slices × fraction ≥ 1) gives up whole slices, chosen at random. A
    smaller stack or a single image would lose too much that way, so every slice stays in training
    and gives up the band of rows at its bottom holding ``val_fraction`` of its annotated pixels:
    those labels are hidden from training (their image stays visible as context) and scored
    instead. Returns (train, validation) ``SliceSet``s; validation is None for a fraction of 0 or
    when nothing could be held out.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"validation fraction must be in [0, 1), got {val_fraction}")
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


class PatchSampler:
    """Draws random training patches placed so that annotated pixels fall in the network's output.

    Slices smaller than the patch are mirror-padded (the padding is not annotated). Targets cover
    the whole input patch; the trainer ``crop``s them to the network's output, as the origin did.
    """

    def __init__(self, data: SliceSet, patch_size: int, output_size: int, rng: np.random.Generator):
        self.patch_size = patch_size
        self.output_size = output_size
        self.rng = rng
        images, targets = data.images, data.targets
        pad_y = max(0, patch_size - images.shape[2])
        pad_x = max(0, patch_size - images.shape[3])
        if pad_y or pad_x:
            pads = ((0, 0), (0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
            images = np.pad(images, pads, mode="reflect" if min(images.shape[2:]) > 1 else "edge")
            targets = np.pad(targets, pads[:1] + pads[2:], constant_values=IGNORE)
        self.images = np.ascontiguousarray(images)
        self.targets = np.ascontiguousarray(targets)
        # Patches are centred near annotated pixels, so sparse scribbles are seen as often as dense labels.
        self.annotated = np.argwhere(self.targets != IGNORE)
        if len(self.annotated) == 0:
            raise InputError("no annotated pixels are left for training; annotate more or lower the validation fraction")

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: images (B, C, P, P) float32 and targets (B, P, P) int64."""
        p, half_out = self.patch_size, self.output_size // 2
        _, _, height, width = self.images.shape
        picks = self.annotated[self.rng.integers(0, len(self.annotated), batch_size)]
        jitter = self.rng.integers(-half_out, half_out + 1, size=(batch_size, 2))
        tops = np.clip(picks[:, 1] - p // 2 + jitter[:, 0], 0, height - p)
        lefts = np.clip(picks[:, 2] - p // 2 + jitter[:, 1], 0, width - p)
        windows = list(zip(picks[:, 0], tops, lefts))
        images = np.stack([self.images[i, :, y : y + p, x : x + p] for i, y, x in windows])
        targets = np.stack([self.targets[i, y : y + p, x : x + p] for i, y, x in windows])
        return torch.from_numpy(images), torch.from_numpy(targets)
