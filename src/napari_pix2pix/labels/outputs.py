"""Output kinds: what a prediction can be turned into. One ``OutputKind`` per entry of ``OUTPUTS``
says its dtype, how one slice's class probabilities become it (on the device where possible, else
on the host), and which napari layer shows it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from .encodings import LabelEncoding
from .postprocess import Cleanup

HostConverter = Callable[[np.ndarray], np.ndarray]
CLASS_PROBABILITIES = "class-probabilities"  # the output a prediction keeps to redo its post-processing
DeviceConverter = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OutputKind:
    """One kind of prediction output.

    ``on_host(encoding, cleanup)`` converts one slice's (K, Y, X) probabilities to the output with
    numpy; ``on_device(encoding, cleanup)``, where given and not None for these settings, does it
    where they were computed, so only the result crosses to the host. ``objects`` outputs number
    objects, so their ids are made unique (and followed) across the slices of a stack.
    ``layer_type`` and ``layer_options`` say how napari shows it.
    """

    name: str
    label: str
    dtype: Callable[[LabelEncoding], np.dtype]
    on_host: Callable[[LabelEncoding, Cleanup | None], HostConverter]
    on_device: Callable[[LabelEncoding, Cleanup | None], DeviceConverter | None] = lambda encoding, cleanup: None
    objects: bool = False
    channels: bool = False  # one channel per class, before the (Y, X) axes of each slice
    layer_type: str = "labels"
    layer_options: dict = field(default_factory=dict)


def _labels_on_host(encoding: LabelEncoding, cleanup: Cleanup | None) -> HostConverter:
    return lambda p: encoding.labels_on_host(p, cleanup)


def _labels_on_device(encoding: LabelEncoding, cleanup: Cleanup | None) -> DeviceConverter | None:
    return None if encoding.needs_cleanup(cleanup) else encoding.labels_on_device


def _instances_on_host(encoding: LabelEncoding, cleanup: Cleanup | None) -> HostConverter:
    return lambda p: encoding.instances(p, cleanup)


def _probability_on_host(encoding: LabelEncoding, cleanup: Cleanup | None) -> HostConverter:
    return lambda p: (1.0 - p[encoding.background]).astype(np.float32)


def _probability_on_device(encoding: LabelEncoding, cleanup: Cleanup | None) -> DeviceConverter:
    return lambda p: 1.0 - p[encoding.background]


OUTPUTS: dict[str, OutputKind] = {
    kind.name: kind
    for kind in (
        OutputKind(
            "labels",
            "Labels (classes)",
            dtype=lambda encoding: encoding.labels_dtype,
            on_host=_labels_on_host,
            on_device=_labels_on_device,
        ),
        OutputKind(
            "instances",
            "Instances (one id per object)",
            dtype=lambda encoding: np.dtype(np.uint32),
            on_host=_instances_on_host,
            objects=True,
        ),
        OutputKind(
            CLASS_PROBABILITIES,
            "Probability of every class (one channel each)",
            dtype=lambda encoding: np.dtype(np.float32),
            on_host=lambda encoding, cleanup: lambda p: p.astype(np.float32),
            on_device=lambda encoding, cleanup: lambda p: p,
            channels=True,
            layer_type="image",
            layer_options={"colormap": "magma", "contrast_limits": (0, 1), "blending": "additive"},
        ),
        OutputKind(
            # Probability of being an object: of any class but the encoding's background (see encodings.py).
            "probability",
            "Probability map",
            dtype=lambda encoding: np.dtype(np.float32),
            on_host=_probability_on_host,
            on_device=_probability_on_device,
            layer_type="image",
            layer_options={"colormap": "magma", "contrast_limits": (0, 1), "blending": "additive"},
        ),
    )
}


def get_output(name: str) -> OutputKind:
    """The output kind called ``name``; ``InputError`` listing the choices if there is none."""
    try:
        return OUTPUTS[name]
    except (KeyError, TypeError):
        raise InputError(f"output must be one of {tuple(OUTPUTS)}, got {name!r}") from None
