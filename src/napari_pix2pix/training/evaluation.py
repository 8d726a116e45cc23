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
    score = ValidationScore(model.encoding.background)
    for index, probabilities in stream_slices(model, planes, height, width, batch_size=4, device=device):
        score.add(probabilities, validation.targets[index])
    return score.result()


class ValidationScore:
    """Cross-entropy and Dice of the objects over the annotated pixels of slices, added one by one.

    Objects are every class but the background (instances: interior and boundary together), the same
    meaning as the probability output's (for EM labels the background is the membrane).
    """

    def __init__(self, background: int):
        self.background = background
        self.losses: list[float] = []
        self.intersection = self.total = 0.0

    def add(self, probabilities: np.ndarray, target: np.ndarray) -> None:
        """One slice's class probabilities (K, Y, X) against its targets (Y, X, ``IGNORE`` to skip)."""
        annotated = target != IGNORE
        if not annotated.any():
            return
        picked = np.take_along_axis(probabilities, np.clip(target, 0, None)[None], axis=0)[0]
        self.losses.append(float(-np.log(np.clip(picked[annotated], 1e-7, 1)).mean()))
        predicted = probabilities.argmax(axis=0)[annotated] != self.background
        truth = target[annotated] != self.background
        self.intersection += float((predicted & truth).sum())
        self.total += float(predicted.sum() + truth.sum())

    def result(self) -> tuple[float | None, float | None]:
        """(mean loss, Dice), or (None, None) when nothing was annotated."""
        if not self.losses:
            return None, None
        return float(np.mean(self.losses)), (2 * self.intersection / self.total if self.total else 1.0)
