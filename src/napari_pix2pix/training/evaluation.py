"""Validation of the network being trained, on held-out slices (2D); volumes are validated in
``volumes.evaluate_volumes``."""

from __future__ import annotations

import numpy as np
import torch

from ..labels.encodings import IGNORE
from ..models.trained import TrainedModel
from ..prediction.streaming import stream_slices
from .data import SliceSet


def evaluate(
    model: TrainedModel, validation: SliceSet, device: torch.device | str
) -> tuple[float | None, float | None]:
    """Validation loss (cross-entropy) and Dice of the objects (every class but the encoding's
    background), on whole held-out slices (already normalised); (None, None) when nothing in them is
    annotated."""
    planes = ((i, np.ascontiguousarray(image)) for i, image in enumerate(validation.images))
    height, width = validation.images.shape[2:]
    background = model.encoding.background
    losses, intersection, total = [], 0.0, 0.0
    for index, probabilities in stream_slices(model, planes, height, width, batch_size=4, device=device):
        target = validation.targets[index]
        annotated = target != IGNORE
        if not annotated.any():
            continue
        picked = np.take_along_axis(probabilities, np.clip(target, 0, None)[None], axis=0)[0]
        losses.append(float(-np.log(np.clip(picked[annotated], 1e-7, 1)).mean()))
        # Objects: every class but the background (instances: interior and boundary together), the
        # same meaning as the probability output's (for EM labels the background is the membrane).
        predicted = probabilities.argmax(axis=0)[annotated] != background
        truth = target[annotated] != background
        intersection += float((predicted & truth).sum())
        total += float(predicted.sum() + truth.sum())
    if not losses:
        return None, None
    return float(np.mean(losses)), (2 * intersection / total if total else 1.0)
