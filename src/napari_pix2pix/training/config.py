"""``TrainingConfig``: every training setting in one dataclass, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_at_least, check_fraction, check_pixel_size, check_voxel_size
from ..errors import InputError
from ..labels.encodings import AUTO
from ..models.networks import Architecture, check_limit, get_architecture

#: How images are scaled before the network sees them. 'dataset': by the 1st and 99.8th percentiles
#: of all the training images together, the same numbers for every image predicted later.
#: 'per-image': every image by its own percentiles, at training and at prediction, for data whose
#: brightness varies between images. Measured on the real nuclei (docs/benchmarks.md), the held-out
#: tile scored object F1 0.84/0.73/0.83/0.82 per image against 0.89/0.89/0.87/0.89 with the
#: dataset's numbers (same model; 1×, 0.4×, 0.75×, 1.5×): a single tile's own percentiles depend on
#: how many nuclei it holds. So 'dataset' is the default.
DATASET, PER_IMAGE = "dataset", "per-image"
#: Each rule's name (as the command line takes it) and how the Train widget offers it.
NORMALISATIONS = {
    DATASET: "The training images' range",
    PER_IMAGE: "Each image by its own range",
}


#: Samples per training step when none is chosen; fewer when the device's free memory asks for it
#: (``planning.fit_in_memory``).
DEFAULT_BATCH = 4

# Fine-tuning a model (``start_from``) trains at this fraction of the architecture's learning rate
# (unless one is given) and keeps the starting model's batch-norm statistics: on one new image, both
# the statistics and the full rate made the shipped nuclei model forget the images it learned from
# (docs/benchmarks.md, Nuclei on images the model has not seen).
FINE_TUNE_RATE = 1 / 3
# ... and ends this share of the way from the starting model's weights to the weights it reached
# (the rest stays the starting model's: WiSE-FT, Wortsman et al. 2022). Fine-tuned 2 minutes from the
# nuclei model before its weights were averaged, six seeds: on the user's own kind of image (the
# sample's fourth tile, after its other three) object F1 0.858 fully fine-tuned, 0.882 halfway; on
# images of other experiments (nuclei-dev) 0.785 and 0.810. From the shipped (averaged) model, three
# seeds: 0.882 and 0.881, 0.777 and 0.820 (docs/benchmarks.md). Continuing a model does not mix again.
FINE_TUNE_MIX = 0.5

DIMS = (AUTO, "2d", "3d")
MIN_3D_SLICES = 8  # a stack with fewer slices gains little from 3D context
MAX_3D_ANISOTROPY = 4.0  # slices further apart than this many pixels are better seen one by one


def choose_dims(shapes: list[tuple[int, ...]], voxel_size: tuple[float, float, float] | None) -> tuple[int, str]:
    """2 or 3, and why, for training images of these spatial shapes ((Y, X) or (Z, Y, X)).

    3D when every image is a stack of at least ``MIN_3D_SLICES`` slices whose voxel size is known and
    whose slices are at most ``MAX_3D_ANISOTROPY`` pixels apart (z spacing ≤ 4 × pixel size), so
    neighbouring slices show the same objects; 2D otherwise (a single image, a short stack, slices
    far apart as in serial-section EM, or no voxel size to judge by).
    """
    depth = min((s[0] if len(s) == 3 else 1) for s in shapes)
    if all(len(s) == 2 for s in shapes):
        return 2, "2D: single images"
    if depth < MIN_3D_SLICES:
        return 2, f"2D: the images have {depth} slice(s), fewer than {MIN_3D_SLICES}"
    if voxel_size is None:
        return 2, "2D: the voxel size is unknown (give it to train in 3D)"
    z, y, x = voxel_size
    ratio = z / min(y, x)
    if ratio > MAX_3D_ANISOTROPY:
        return 2, f"2D: the slices are {ratio:.1f}× the pixel size apart (3D needs at most {MAX_3D_ANISOTROPY:g}×)"
    return 3, f"3D: the stack has {depth} slices of {z:.3g}, {ratio:.1f}× the pixel size"


@dataclass
class TrainingConfig:
    """Every training setting, with defaults that learn well in minutes on two CPU cores.

    Training runs until the time budget ``max_minutes``; ``epochs`` is an optional extra limit
    (None: until the time budget). The learning rate warms up, then decays to the end of the run,
    whichever limit ends it. ``patch_size`` and ``learning_rate`` left as None take the
    architecture's defaults (see ``models.ARCHITECTURES``), ``batch_size`` left as None
    ``DEFAULT_BATCH``; the batch, then the patch, left as None shrink when the device's free memory
    asks for it (``planning.fit_in_memory``), while values given are kept (or refused).
    """

    model: str = "unet"
    annotation: str = AUTO
    epochs: int | None = None
    max_minutes: float | None = 10.0
    steps_per_epoch: int = 20
    batch_size: int | None = None  # None: DEFAULT_BATCH, or fewer to fit the memory
    patch_size: int | None = None
    learning_rate: float | None = None
    val_fraction: float = 0.2
    augment: bool = True
    device: str = "auto"
    seed: int = 0
    width: int = 16
    depth: int | None = None  # pooling levels; None: the architecture's (4, the 3D U-Net 3)
    l1_weight: float = 100.0
    mixed_precision: bool = True
    preview_every: int = 10
    # w₀ of the U-Net paper's boundary weight map (0: off; None: the annotation kind's default, 10 for
    # instances and 0 for the others); see weightmap.py
    boundary_weight: float | None = None
    normalisation: str = DATASET  # or PER_IMAGE: see NORMALISATIONS
    pixel_size: tuple[float, float] | None = None  # (y, x) physical pixel size of the images, if known
    dims: str = AUTO  # "2d" (slice by slice), "3d" (volumes) or "auto": see choose_dims
    voxel_size: tuple[float, float, float] | None = None  # (z, y, x) of the stacks, if known
    # 3D: bin the stacks' y and x this many times before the network (None: automatic, see
    # binning.plan_binning; 1: never); the model keeps the binned voxel size
    binning: int | None = None

    def check(self) -> None:
        """Raise ``InputError`` naming the first setting that is out of range."""
        get_architecture(self.model)
        if self.epochs is None and self.max_minutes is None:
            raise InputError("set a time budget (minutes), a number of epochs, or both")
        for name in ("steps_per_epoch", "preview_every"):
            check_at_least(name, getattr(self, name))
        if self.batch_size is not None:
            check_at_least("batch_size", self.batch_size)
        # The model file's limits (models.MODEL_LIMITS), so that what training saves can be loaded
        check_limit("width", self.width)
        check_limit("depth", self.levels)
        check_limit("patch_size", self.patch)
        if self.epochs is not None:
            check_at_least("epochs", self.epochs)
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"the time budget must be positive, got {self.max_minutes} minutes")
        if self.learning_rate is not None and not (0 < self.learning_rate < 1):
            raise InputError(f"learning rate must be between 0 and 1, got {self.learning_rate}")
        check_fraction("validation fraction", self.val_fraction)
        if self.pixel_size is not None:
            check_pixel_size(self.pixel_size)
        if self.normalisation not in NORMALISATIONS:
            raise InputError(f"normalisation must be one of {list(NORMALISATIONS)}, got {self.normalisation!r}")
        if self.boundary_weight is not None and not 0 <= self.boundary_weight <= 100:
            raise InputError(f"the boundary weight must be from 0 (off) to 100, got {self.boundary_weight}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"the seed must be a whole number from 0 to {2**32 - 1}, got {self.seed}")
        if self.dims not in DIMS:
            raise InputError(f"dims must be one of {DIMS}, got {self.dims!r}")
        if self.voxel_size is not None:
            check_voxel_size(self.voxel_size)
        if self.binning is not None:
            check_limit("binning", self.binning)

    @property
    def architecture(self) -> Architecture:
        return get_architecture(self.model)

    @property
    def levels(self) -> int:
        """The network's pooling levels: ``depth``, or the architecture's when it is None."""
        return self.depth if self.depth is not None else self.architecture.depth

    @property
    def patch(self) -> int:
        return self.patch_size if self.patch_size is not None else self.architecture.patch_size

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else self.architecture.learning_rate
