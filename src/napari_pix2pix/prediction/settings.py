"""``PredictionSettings``: every prediction option in one frozen dataclass, checked once when made.

The command line, the Predict widget, the Dask cluster and the Python API all build one and hand it
on whole; the widget keeps the one a result was made with, so *Re-apply* changes only the cleanup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from ..checks import check_pixel_size, check_voxel_size
from ..devices import DEVICES
from ..errors import InputError
from ..labels.outputs import get_output
from ..labels.postprocess import Cleanup
from ..models.trained import TrainedModel

AUTO_SIZE = "auto"
#: Images are predicted at their own scale by default; 'auto' (estimate the objects' size and rescale to
#: the model's) is an option. Measured on images the model has not seen (docs/benchmarks.md, Quality on
#: images the model has not seen): on the three nuclei-dev images it lowered the mean object F1 of a
#: model trained 5 minutes (0.72 against 0.75) and of the starting model (0.73 against 0.77), at 2.4×
#: the prediction time; on held-out EM slices it fired on slices of the training stack itself.
DEFAULT_OBJECT_SIZE: float | str | None = None
#: Test-time augmentation is off by default: on 2 CPU cores it costs 8× the time for a small gain
#: (docs/benchmarks.md, Quality on real data).
DEFAULT_TTA = False


@dataclass(frozen=True)
class PredictionSettings:
    """How a trained model is applied to an image.

    Parameters
    ----------
    output : str, optional
        A name in ``labels.outputs.OUTPUTS``: 'labels' (class labels, in the annotation's values),
        'instances' (one id per object), 'probability' (probability of not being background) or
        'class-probabilities' (one channel per class). None: the model's default output.
    tta : bool
        Test-time augmentation: average the 8 flips and 90° turns of every tile (8× the work).
    object_size : 'auto', float or None
        The typical diameter (pixels) of the objects in the image; the image is rescaled so they
        have the size the model learned, and the result is scaled back. 'auto' measures it on the
        middle slice (rescaling only when the sizes differ by more than 25 %); None (the default)
        predicts at the image's own scale.
    cleanup : Cleanup or None
        How objects are tidied (watershed lines between touching objects, minimum size, hole
        filling, probability threshold). None keeps the network's raw classes.
    link_slices : bool
        For instances in a stack: an object continuing from the previous slice keeps its id.
    pixel_size : (float, float), optional
        The image's (y, x) physical pixel size, when known: compared with the training images'.
    match_pixel_size : bool
        Rescale an image whose pixels differ from the training images' to the model's pixel size
        (else a ``PixelSizeWarning`` says they differ).
    voxel_size : (float, float, float), optional
        A stack's (z, y, x) voxel size, when known: a 3D model predicts a stack of other voxels
        rescaled per axis to its own and scales the result back (a ``VoxelSizeNote`` says so).
    tile_size, overlap : int, optional
        Tile side and overlap in pixels (default: from the training patch size).
    batch_size : int, optional
        Tiles per forward pass (default: 4 on the CPU, 16 on a GPU).
    device : str
        'auto', 'cpu', 'cuda' (or 'cuda:N') or 'mps'.

    Raises
    ------
    InputError
        When a setting is out of range; the message names it.
    """

    output: str | None = None
    tta: bool = DEFAULT_TTA
    object_size: float | str | None = DEFAULT_OBJECT_SIZE
    cleanup: Cleanup | None = Cleanup()
    link_slices: bool = True
    pixel_size: tuple[float, float] | None = None
    match_pixel_size: bool = False
    voxel_size: tuple[float, float, float] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.output is not None:
            get_output(self.output)
        if self.object_size is not None and self.object_size != AUTO_SIZE:
            if isinstance(self.object_size, str) or not _positive(self.object_size):
                raise InputError(
                    f"object size must be a positive number of pixels, 'auto' or None, got {self.object_size!r}"
                )
            object.__setattr__(self, "object_size", float(self.object_size))
        if self.pixel_size is not None:
            object.__setattr__(self, "pixel_size", check_pixel_size(self.pixel_size))
        if self.voxel_size is not None:
            object.__setattr__(self, "voxel_size", check_voxel_size(self.voxel_size))
        for name, minimum in (("tile_size", 1), ("overlap", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                what = name.replace("_", " ")
                raise InputError(f"the {what} must be a whole number of at least {minimum}, got {value!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.cleanup is not None and not isinstance(self.cleanup, Cleanup):
            raise InputError(f"cleanup must be a Cleanup or None, got {type(self.cleanup).__name__}")

    def output_for(self, model: TrainedModel) -> str:
        """The output to make with ``model``: this one, or the model's default."""
        return self.output or model.encoding.default_output


def _positive(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def make_settings(
    settings: PredictionSettings | None, output: str | None, options: dict[str, Any]
) -> PredictionSettings:
    """``settings`` (or the defaults) with ``output`` and keyword ``options`` (field names) applied,
    for the API's ``predict(model, image, "instances", tta=True)``; unknown names are refused."""
    names = {f.name for f in fields(PredictionSettings)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise InputError(
            f"unknown prediction option(s) {', '.join(unknown)}; the options are {', '.join(sorted(names))}"
        )
    base = settings or PredictionSettings()
    if output is not None:
        options = {**options, "output": output}
    return replace(base, **options) if options else base
