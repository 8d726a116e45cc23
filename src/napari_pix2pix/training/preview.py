"""The live preview of a run: the current network's labels for what the viewer shows (a slice for a
2D network, a block of slices around it for a 3D one), as a training loop yields them."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ..errors import InputError
from ..labels.outputs import get_output
from ..models.trained import TrainedModel
from ..prediction.pipeline import iter_probabilities, predict
from ..prediction.rescale import RescalingNote
from ..prediction.settings import PredictionSettings

PREVIEW_DEPTH = 16  # slices of the block a 3D network previews on, around the slice in view
PREVIEW_SHARE = 4  # a 3D preview waits for 4× its own time of training (≤ 20 % of the run)


def preview_labels(model: TrainedModel, source: Callable[[], Any], dims: int, device: str) -> np.ndarray | None:
    """The model's labels, in the output its annotation kind is predicted as by default, for the
    image ``source()`` returns (None to skip): for a 2D network the slice in view; for a 3D network
    ``source(depth=PREVIEW_DEPTH)``, a block of slices around it, whose labels (Z, Y, X) come back
    whole. None when there is nothing to preview or the model cannot take the image."""
    try:
        image = source() if dims == 2 else _block(source)
        if image is None:
            return None
        encoding = model.encoding
        if dims == 3:
            with warnings.catch_warnings():  # a binned model's rescaling is said once, at prediction, not per preview
                warnings.simplefilter("ignore", RescalingNote)
                return predict(
                    model, np.asarray(image), encoding.default_output, settings=PredictionSettings(device=device)
                )
        ((_, probabilities),) = iter_probabilities(model, np.asarray(image), settings=PredictionSettings(device=device))
        return get_output(encoding.default_output).on_host(encoding, None)(probabilities)
    except InputError:
        return None  # an image the model cannot take (e.g. wrong channels): no preview, training goes on


def _block(source: Callable[[], Any]) -> np.ndarray | None:
    """A (Z, Y, X[, C]) block around the slice in view, or None (a source that gives no blocks)."""
    try:
        block = cast(Callable[..., Any], source)(depth=PREVIEW_DEPTH)
    except TypeError:  # a source written for 2D networks only
        return None
    return None if block is None or np.ndim(block) < 3 else block
