"""Annotation kinds: how the values of a Labels layer become network classes, and classes become
labels again. One ``LabelEncoding`` subclass per kind, registered in ``ENCODINGS``:

- ``dense``: every pixel of an annotated slice counts; 0 is a class (e.g. background);
- ``sparse``: scribbles; 0 means "not annotated";
- ``instances``: one id per object; the network learns background, interior and boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .errors import InputError
from .postprocess import connected_components, instances_from_probabilities, smallest_uint_dtype

IGNORE = -1  # class index of pixels that do not count in the loss
AUTO = "auto"  # the annotation choice that lets ``make_encoding`` decide
# Classes of the instance encoding: background, object interior, object boundary.
INSTANCE_CLASSES = ("background", "interior", "boundary")

_CONVERT_PIXELS = 2**18  # argmax gives int64: labels are converted a band of this many pixels at a time
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.int64): torch.int64,
}


@dataclass(frozen=True)
class LabelEncoding:
    """How label values map to network classes, and back: ``class_values[i]`` is the label value
    predicted for class ``i``. Subclasses are the annotation kinds."""

    class_values: tuple[int, ...]

    kind: ClassVar[str]
    label: ClassVar[str]  # how the Train widget names the kind
    default_output: ClassVar[str] = "labels"  # the prediction output a user of this kind wants

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        """The encoding of this kind for ``labels``; ``InputError`` when they cannot be read so."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, "class_values": [int(v) for v in self.class_values]}

    @staticmethod
    def from_dict(d: dict) -> LabelEncoding:
        kind = d["kind"]
        if kind not in ENCODINGS:
            raise ValueError(f"unknown annotation kind {kind!r}")
        return ENCODINGS[kind](tuple(int(v) for v in d["class_values"]))

    def describe(self) -> str:
        return f"{self.kind} labels {list(self.class_values)}"

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class index per pixel (int64), ``IGNORE`` where the pixel does not count."""
        lookup = np.full(int(labels.max()) + 1, IGNORE, dtype=np.int64)
        for index, value in enumerate(self.class_values):
            if value < lookup.size:
                lookup[value] = index
        return lookup[labels]

    @property
    def labels_dtype(self) -> np.dtype:
        return smallest_uint_dtype(max(self.class_values))

    def labels_on_host(self, probabilities: np.ndarray) -> np.ndarray:
        """Label values (Y, X) from class probabilities (K, Y, X)."""
        lookup = np.asarray(self.class_values).astype(self.labels_dtype)
        return lookup[probabilities.argmax(axis=0)]

    def labels_on_device(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``labels_on_host`` as tensor operations, where the probabilities are."""
        lookup = torch.tensor(self.class_values, dtype=torch.int64, device=probabilities.device)
        labels = torch.empty(
            probabilities.shape[1:], dtype=_TORCH_DTYPES[self.labels_dtype], device=probabilities.device
        )
        rows = max(1, _CONVERT_PIXELS // probabilities.shape[2])
        for top in range(0, probabilities.shape[1], rows):
            labels[top : top + rows] = lookup[probabilities[:, top : top + rows].argmax(dim=0)]
        return labels

    def instances(self, probabilities: np.ndarray) -> np.ndarray:
        """Instance labels (Y, X, uint32) from class probabilities (K, Y, X)."""
        return connected_components(probabilities)


class DenseEncoding(LabelEncoding):
    kind = "dense"
    label = "Dense: labelled slices fully painted"

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        values = tuple(int(v) for v in np.unique(labels))
        if len(values) < 2:
            raise InputError(
                "dense annotation needs at least two classes, but every annotated pixel has the value "
                f"{values[0]}; label the background as 0 and the objects with another value"
            )
        return cls(values)


class SparseEncoding(LabelEncoding):
    kind = "sparse"
    label = "Sparse scribbles: 0 = not annotated"

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        values = tuple(int(v) for v in np.unique(labels) if v != 0)
        if len(values) < 2:
            raise InputError(
                "sparse (scribble) annotation needs at least two label values, one per class "
                "(e.g. 1 = background, 2 = cells); 0 means 'not annotated'"
            )
        return cls(values)


@dataclass(frozen=True)
class InstanceEncoding(LabelEncoding):
    class_values: tuple[int, ...] = (0, 1, 1)  # background, interior and boundary are all "object" but 0

    kind = "instances"
    label = "Instances: one id per object"
    default_output = "instances"

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        return cls()

    def describe(self) -> str:
        return "instance labels: " + ", ".join(INSTANCE_CLASSES)

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Instance ids → 0 background, 1 object interior, 2 object boundary (touching objects split)."""
        from skimage.segmentation import find_boundaries

        classes = (labels > 0).astype(np.int64)
        for plane, target in zip(labels.reshape(-1, *labels.shape[-2:]), classes.reshape(-1, *labels.shape[-2:])):
            target[find_boundaries(plane, mode="inner") & (plane > 0)] = 2
        return classes

    @property
    def labels_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def labels_on_host(self, probabilities: np.ndarray) -> np.ndarray:
        return (probabilities[0] < 0.5).astype(np.uint8)

    def labels_on_device(self, probabilities: torch.Tensor) -> torch.Tensor:
        return (probabilities[0] < 0.5).to(torch.uint8)

    def instances(self, probabilities: np.ndarray) -> np.ndarray:
        return instances_from_probabilities(probabilities)


ENCODINGS: dict[str, type[LabelEncoding]] = {cls.kind: cls for cls in (DenseEncoding, SparseEncoding, InstanceEncoding)}
ANNOTATION_CHOICES = (AUTO, *ENCODINGS)


def choose_annotation_kind(labels: np.ndarray) -> str:
    """Guess the annotation kind: many distinct ids mean instance labels, else dense classes."""
    values = np.unique(labels)
    return InstanceEncoding.kind if np.count_nonzero(values) > 8 else DenseEncoding.kind


def make_encoding(labels: np.ndarray, kind: str = AUTO) -> LabelEncoding:
    """The ``LabelEncoding`` for ``labels`` annotated as ``kind`` (one of ``ANNOTATION_CHOICES``)."""
    if kind == AUTO:
        kind = choose_annotation_kind(labels)
    if kind not in ENCODINGS:
        raise InputError(f"annotation kind must be one of {ANNOTATION_CHOICES}, got {kind!r}")
    return ENCODINGS[kind].from_labels(labels)
