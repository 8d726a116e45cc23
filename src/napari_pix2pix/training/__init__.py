"""Training: the settings (``TrainingConfig``), training data from (image, labels) pairs, augmentation,
the boundary weight map, the step objects and the loop (``train``, ``fit``, ``Trainer``)."""

from .config import NORMALISATIONS, TrainingConfig
from .events import EventKind, TrainingEvent
from .fitting import fit, train
from .loop import Trainer

__all__ = ["NORMALISATIONS", "EventKind", "Trainer", "TrainingConfig", "TrainingEvent", "fit", "train"]
