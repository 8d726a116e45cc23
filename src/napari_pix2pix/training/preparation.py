"""Training data from (image, labels) pairs: checks, one encoding for all pairs, normalisation,
padding to a common size and the validation split (``prepare_data``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_finite, check_labels
from ..errors import InputError
from ..labels.encodings import AUTO, IGNORE, LabelEncoding, make_encoding
from ..labels.postprocess import typical_object_size
from ..models.normalisation import Normalisation
from ..models.trained import TrainedModel
from .config import PER_IMAGE, TrainingConfig
from .data import SliceSet, VolumeSet, annotated_slices, as_channels_last, split_train_validation
from .weightmap import boundary_weights


@dataclass
class PreparedData:
    encoding: LabelEncoding
    normalisation: Normalisation
    train: SliceSet | VolumeSet
    validation: SliceSet | VolumeSet | None
    in_channels: int
    object_size: float | None = None
    binning: int = 1  # volumes: their y and x were binned this many times (binning.py)


Pair = tuple  # (image, labels): an image (or stack) and its annotations


def as_pairs(image: Any, labels: Any | None) -> list[Pair]:
    """The (image, labels) pairs a call names: one pair, or a list of pairs given as ``image``."""
    if labels is not None:
        return [(image, labels)]
    if not isinstance(image, (list, tuple)) or not image:
        raise InputError("give an image and its labels, or a list of (image, labels) pairs")
    for number, pair in enumerate(image, start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InputError(f"pair {number} is not an (image, labels) pair")
    return list(image)


def checked_pair(image: Any, labels: Any, config: TrainingConfig, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        labels = check_labels(labels)
        image = as_channels_last(image, labels_shape=labels.shape)
    except InputError as error:
        raise InputError(f"{where.replace(' of ', '').strip()}: {error}" if where else str(error)) from None
    check_finite(image, f"the image{where}")
    labels = labels[None] if labels.ndim == 2 else labels
    min_side = 2**config.levels
    if min(labels.shape[1:]) < min_side:
        raise InputError(
            f"the image{where} is {labels.shape[1]}×{labels.shape[2]} pixels; this model needs at least "
            f"{min_side}×{min_side}"
        )
    return image, labels


def encoding_for(
    pairs: list[tuple[np.ndarray, np.ndarray]], config: TrainingConfig, resume: TrainedModel | None
) -> LabelEncoding:
    """One encoding for every pair: the union of their classes (or the resumed model's, checked)."""
    labels = [lab for _, lab in pairs]
    if resume is not None:
        encoding = resume.encoding
        kind = encoding.kind if config.annotation == AUTO else config.annotation
        # New labels may hold any of the model's classes, one alone too (a corrected slice, say).
        values = {int(v) for lab in labels for v in np.unique(lab)} - (
            {0} if encoding.zero_means_unannotated else set()
        )
        if kind != encoding.kind or (encoding.values_are_classes and not values <= set(encoding.class_values)):
            raise InputError(
                f"the model to resume was trained on {encoding.kind} labels {list(encoding.class_values)}, "
                f"but these labels are {kind} {sorted(values)[:10]}; start a new model instead"
            )
        return encoding
    if len(labels) == 1:
        return make_encoding(labels[0], config.annotation)
    # One mosaic of every slice (widths evened out by repeating their edges, which adds no value),
    # so the classes, the annotation kind and the background are read from all pairs together.
    width = max(lab.shape[-1] for lab in labels)
    planes = [np.pad(plane, ((0, 0), (0, width - plane.shape[-1])), mode="edge") for lab in labels for plane in lab]
    return make_encoding(np.concatenate(planes), config.annotation)


def _slices_of(image: np.ndarray, labels: np.ndarray, normalisation: Normalisation, encoding: LabelEncoding) -> tuple:
    """A pair's annotated slices: images normalised by the rule (per image), class targets."""
    slices = annotated_slices(labels)
    fixed = normalisation.for_image(image)
    return np.moveaxis(fixed.apply(image[slices]), -1, 1), encoding.encode(labels[slices]), labels[slices]


def _padded(images: np.ndarray, targets: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices padded to (height, width): mirrored image context, unannotated targets."""
    pad_y, pad_x = height - images.shape[2], width - images.shape[3]
    if not pad_y and not pad_x:
        return images, targets
    pads = ((0, 0), (0, 0), (0, pad_y), (0, pad_x))
    padded = np.pad(images, pads, mode="reflect") if min(images.shape[2:]) > 1 else np.pad(images, pads, mode="edge")
    return padded, np.pad(targets, pads[:1] + pads[2:], constant_values=IGNORE)


def pooled_normalisation(pairs: list[tuple[np.ndarray, np.ndarray]], per_image: bool) -> Normalisation:
    """The percentiles of every pair's image together (channels last), and the rule to apply."""
    in_channels = pairs[0][0].shape[-1]
    pooled = pairs[0][0] if len(pairs) == 1 else np.concatenate([i.reshape(-1, in_channels) for i, _ in pairs])
    return Normalisation.fit(pooled, per_image=per_image)


def prepare_data(
    image: Any, labels: Any | None, config: TrainingConfig, resume: TrainedModel | None, rng: np.random.Generator
) -> PreparedData:
    """Check the inputs (one pair, or ``image`` a list of pairs and ``labels`` None) and turn them
    into normalised slices with class targets.

    Pairs may differ in size, slice count and annotation; their slices are padded to the largest
    (padding is not annotated, so patches are drawn in proportion to each pair's annotated pixels).
    Images are normalised by the training data's percentiles, or each by its own with
    ``config.normalisation == PER_IMAGE`` (the rule the model stores). With several pairs,
    validation holds out whole images when the fraction allows it. The training slices carry the
    boundary weight map when ``config.boundary_weight`` (or the annotation kind's default) is above 0.
    """
    given = as_pairs(image, labels)
    many = len(given) > 1
    pairs = [checked_pair(i, lab, config, f" of pair {n}" if many else "") for n, (i, lab) in enumerate(given, 1)]
    channels = {i.shape[-1] for i, _ in pairs}
    if len(channels) > 1:
        raise InputError(f"the images have different numbers of channels ({sorted(channels)}); train on one kind")
    in_channels = channels.pop()
    if resume is not None and in_channels != resume.config.in_channels:
        raise InputError(
            f"the model to resume was trained on {resume.config.in_channels}-channel images, but this image "
            f"has {in_channels}; start a new model instead"
        )
    encoding = encoding_for(pairs, config, resume)
    if resume is not None:
        normalisation = resume.normalisation
    else:  # the training data's percentiles, or the per-image rule (see NORMALISATIONS)
        normalisation = pooled_normalisation(pairs, config.normalisation == PER_IMAGE)
    parts = [_slices_of(i, lab, normalisation, encoding) for i, lab in pairs]
    height, width = max(p[0].shape[2] for p in parts), max(p[0].shape[3] for p in parts)
    padded = [_padded(images, targets, height, width) for images, targets, _ in parts]
    train_set, validation = _split(padded, config.val_fraction, rng)
    weight = boundary_weight(encoding, config)
    if weight > 0:  # the loss's weight map (weightmap.py), for the training slices
        train_set.weights = boundary_weights(train_set.targets, encoding.object_classes, weight)
    objects = [o for _, _, planes in parts for o in (encoding.objects(plane) for plane in planes) if o is not None]
    object_size = typical_object_size(objects) if objects else None
    if resume is not None:  # a continued or fine-tuned model keeps the scale it has (or its having none)
        object_size = resume.object_size
    return PreparedData(encoding, normalisation, train_set, validation, in_channels, object_size)


def boundary_weight(encoding: LabelEncoding, config: TrainingConfig) -> float:
    """w₀ of the loss's boundary weight map (weightmap.py): the user's, else the annotation kind's."""
    return encoding.default_boundary_weight if config.boundary_weight is None else config.boundary_weight


def _split(
    padded: list[tuple[np.ndarray, np.ndarray]], fraction: float, rng: np.random.Generator
) -> tuple[SliceSet, SliceSet | None]:
    """Hold out whole pairs when there are enough of them, else slices or bands (``split_train_validation``)."""
    held = min(len(padded) - 1, round(len(padded) * fraction))
    if len(padded) > 1 and held >= 1:
        order = rng.permutation(len(padded))
        train, val = [padded[i] for i in sorted(order[held:])], [padded[i] for i in sorted(order[:held])]
        return (
            SliceSet(np.concatenate([p[0] for p in train]), np.concatenate([p[1] for p in train])),
            SliceSet(np.concatenate([p[0] for p in val]), np.concatenate([p[1] for p in val])),
        )
    images, targets = np.concatenate([p[0] for p in padded]), np.concatenate([p[1] for p in padded])
    return split_train_validation(images, targets, fraction, rng)
