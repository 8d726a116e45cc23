"""The Train dock's advanced settings (shown under "Advanced settings"): batch, patch, rate, validation,
augmentation, intensity scaling, boundary weight, device, seed, the network's width and depth, and the
3D in-plane binning."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from ..models.networks import ARCHITECTURES, MODEL_LIMITS, get_architecture
from ..models.trained import TrainedModel
from ..training.binning import MAX_BINNING, MIN_BINNED_OBJECT
from ..training.config import DATASET, DEFAULT_BATCH, FINE_TUNE_RATE, NORMALISATIONS, PER_IMAGE, TrainingConfig
from ._devices import DEVICE_CHOICES

AUTO_WEIGHT = -1.0  # the Boundary weight box's value for 'the annotation kind's default'
AUTO = 0  # the Depth and Binning boxes' value for 'automatic'


class AdvancedTrainingSettings(Container):
    """The advanced settings as one container; ``fields()`` gives them as ``TrainingConfig`` fields."""

    def __init__(self, defaults: TrainingConfig):
        self.batch_size = SpinBox(label="Batch size (0 = automatic)", value=defaults.batch_size or 0, min=0, max=256)
        self.batch_size.tooltip = (
            f"Training patches per step; 0: {DEFAULT_BATCH}, or fewer when the device's free memory asks for it. "
            "A number given is kept, or refused when it cannot fit"
        )
        self.patch_size = SpinBox(label="Patch size", value=defaults.patch, min=16, max=2048, step=16)
        self.learning_rate = FloatSpinBox(label="Learning rate", value=defaults.lr, min=1e-6, max=0.5, step=1e-4)
        self.learning_rate.native.setDecimals(6)
        self.val_fraction = FloatSpinBox(
            label="Validation fraction", value=defaults.val_fraction, min=0, max=0.9, step=0.05
        )
        self.augment = CheckBox(text="Augmentation (flips, rotations, elastic, intensity)", value=True)
        self.normalisation = ComboBox(
            label="Intensity scaling",
            choices=[(label, name) for name, label in NORMALISATIONS.items()],
            value=defaults.normalisation,
        )
        self.normalisation.tooltip = (
            "How images are scaled for the network: by the training images' 1st-99.8th percentiles (the "
            "same for every image), or each image by its own (for images whose brightness varies)"
        )
        # -1 shows as "auto": the annotation kind's default (10 for instances, 0 for the others).
        self.boundary_weight = FloatSpinBox(
            label="Boundary weight", value=AUTO_WEIGHT, min=AUTO_WEIGHT, max=100, step=1
        )
        self.boundary_weight.native.setSpecialValueText("auto (10 for instances, else off)")
        self.boundary_weight.tooltip = (
            "Weigh the thin gaps between objects (membranes between cells, background between touching "
            "nuclei) up to 1 + this many times in the loss, so they stay open (the U-Net paper's weight "
            "map); 0: off"
        )
        self.device = ComboBox(label="Device", choices=DEVICE_CHOICES, value="auto")
        self.seed = SpinBox(label="Seed", value=defaults.seed, min=0, max=2**31 - 1)
        self.network_width = SpinBox(label="Width (first-layer channels)", value=defaults.width, min=1, max=256)
        # A float box shows its minimum (0) as "auto", which the integer box cannot.
        self.network_depth = _auto_box("Depth (pooling levels)", 6)
        levels_2d, levels_3d = ARCHITECTURES["unet"].depth, ARCHITECTURES["unet-3d"].depth
        self.network_depth.native.setSpecialValueText(f"auto ({levels_2d}; the 3D U-Net {levels_3d})")
        self.network_depth.tooltip = (
            "How many times the network halves the image: more levels see more context, fewer train faster. "
            f"auto: {levels_2d} for the 2D networks, {levels_3d} for the 3D U-Net"
        )
        self.binning = _auto_box("3D: bin y and x (times)", MODEL_LIMITS["binning"][1])
        self.binning.native.setSpecialValueText(f"auto (up to {MAX_BINNING}×)")
        self.binning.tooltip = (
            "A 3D network on a stack whose slices lie further apart than its pixels: average each N × N block "
            "of pixels first, so that a patch holds more of every object and training is faster; the model "
            "predicts at that voxel size and scales back. auto: up to "
            f"{MAX_BINNING}× while the binned pixels stay no wider than the slice spacing and the objects at "
            f"least {MIN_BINNED_OBJECT:g} pixels across; 1: never. 2D networks ignore it"
        )
        super().__init__(
            widgets=[
                self.batch_size,
                self.patch_size,
                self.learning_rate,
                self.val_fraction,
                self.augment,
                self.normalisation,
                self.boundary_weight,
                self.device,
                self.seed,
                self.network_width,
                self.network_depth,
                self.binning,
            ]
        )

    def fields(self) -> dict[str, Any]:
        """The settings as ``TrainingConfig`` keyword arguments."""
        return {
            "batch_size": self.batch_size.value or None,  # 0: automatic
            "patch_size": self.patch_size.value,
            "learning_rate": self.learning_rate.value,
            "val_fraction": self.val_fraction.value,
            "augment": self.augment.value,
            "normalisation": self.normalisation.value,
            "boundary_weight": None if self.boundary_weight.value == AUTO_WEIGHT else self.boundary_weight.value,
            "device": self.device.value,
            "seed": self.seed.value,
            "width": self.network_width.value,
            "depth": int(self.network_depth.value) or None,
            "binning": int(self.binning.value) or None,
        }

    def follow_architecture(self, name: str) -> None:
        """The patch size and learning rate that suit the chosen network."""
        architecture = get_architecture(name)
        self.patch_size.value = architecture.patch_size
        self.learning_rate.value = architecture.learning_rate

    def follow_base(self, architecture: str, base: TrainedModel | None, gentle: bool) -> None:
        """A continued or fine-tuned model (``base``) keeps its network, intensity scaling and
        binning: they are shown, not offered. Fine-tuning (``gentle``) trains at a gentler rate
        (``FINE_TUNE_RATE``)."""
        for widget in (self.network_width, self.network_depth, self.normalisation, self.binning):
            widget.enabled = base is None
        if base is not None:
            self.network_width.value, self.network_depth.value = base.config.width, base.config.depth
            self.normalisation.value = PER_IMAGE if base.normalisation.per_image else DATASET
            self.binning.value = base.binning if base.voxel_size is not None else AUTO
        rate = get_architecture(architecture).learning_rate
        self.learning_rate.value = rate * FINE_TUNE_RATE if gentle else rate


def _auto_box(label: str, most: int) -> FloatSpinBox:
    """A box of whole numbers from 1 to ``most`` whose 0 reads 'auto' (set by the caller)."""
    box = FloatSpinBox(label=label, value=AUTO, min=AUTO, max=most, step=1)
    box.native.setDecimals(0)
    return box
