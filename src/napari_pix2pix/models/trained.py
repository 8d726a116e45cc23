"""``TrainedModel``: a network with everything needed to apply it to new images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from torch import nn

from ..labels.encodings import LabelEncoding
from .networks import ModelConfig, SizeContract
from .normalisation import Normalisation


@dataclass
class TrainedModel:
    """A trained network with its architecture, classes, normalisation and training history."""

    config: ModelConfig
    network: nn.Module  # satisfies ``models.SegmentationNetwork``
    encoding: LabelEncoding
    normalisation: Normalisation
    patch_size: int = 256
    history: list[dict] = field(default_factory=list)
    discriminator_state: dict | None = None
    device: str = "cpu"
    object_size: float | None = None  # median object diameter (pixels) in the training labels
    pixel_size: tuple[float, float] | None = None  # (y, x) physical size of the training images' pixels
    voxel_size: tuple[float, float, float] | None = None  # 3D models: (z, y, x) the network learned
    # 3D models: the training volumes' y and x were binned this many times (``voxel_size`` is the
    # binned one); a volume of unknown voxel size is taken to have the training volumes' own
    binning: int = 1

    @property
    def architecture(self) -> str:
        return self.config.architecture

    @property
    def fine_tuned(self) -> bool:
        """Its last run fine-tuned a starting model (the batch-norm statistics kept, at the gentler
        rate): a run continuing it goes on the same way. Recorded in the history's epochs."""
        return bool(self.history) and bool(self.history[-1].get("fine_tuning", False))

    def describe(self) -> str:
        """One line for people: architecture, classes and how well it validated."""
        metric = [h["val_dice"] for h in self.history if h.get("val_dice") is not None]
        best = f", best validation Dice {max(metric):.3f}" if metric else ""
        return f"{self.architecture} ({self.encoding.describe()}), trained {len(self.history)} epochs{best}"

    @property
    def sizes(self) -> SizeContract:
        """The network's size contract (which inputs it takes, what outputs it gives)."""
        return cast(SizeContract, self.network)
