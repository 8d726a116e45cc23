"""What a training run reports: ``TrainingEvent``s of a few kinds (``EventKind``), yielded by ``train``
and drawn by the napari widget or printed by the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class EventKind(StrEnum):
    """What a ``TrainingEvent`` reports."""

    START = "start"
    STEP = "step"
    EPOCH = "epoch"
    PREVIEW = "preview"
    FINISHED = "finished"


@dataclass
class TrainingEvent:
    """A progress report from ``train``; fields that do not apply are None."""

    kind: EventKind
    step: int = 0
    total_steps: int | None = None  # None: until the time budget
    epoch: int = 0
    epochs: int | None = None
    progress: float = 0.0  # fraction of the run done, by time or by steps, whichever is further
    elapsed: float = 0.0
    remaining: float | None = None
    loss: float | None = None
    generator_loss: float | None = None
    discriminator_loss: float | None = None
    val_loss: float | None = None
    val_dice: float | None = None
    device: str = ""
    message: str = ""
    preview: np.ndarray | None = field(default=None, repr=False)


_EVENT_NAMES = {"loss": "loss", "g_loss": "generator_loss", "d_loss": "discriminator_loss"}


def loss_fields(losses: dict) -> dict:
    return {_EVENT_NAMES[k]: v for k, v in losses.items() if k in _EVENT_NAMES}
