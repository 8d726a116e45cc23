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

from ..errors import InputError
from .postprocess import Cleanup, connected_components, instances_from_probabilities, smallest_uint_dtype

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
    predicted for class ``i``. ``background`` is the class that surrounds or separates the objects
    (the background of nuclei, the membranes between EM cells); the other classes are objects.
    Subclasses are the annotation kinds."""

    class_values: tuple[int, ...]
    background: int = 0

    kind: ClassVar[str]
    label: ClassVar[str]  # how the Train widget names the kind
    default_output: ClassVar[str] = "labels"  # the prediction output a user of this kind wants
    separable: ClassVar[bool] = True  # whether touching objects are split by watershed lines when cleaning up
    # w₀ of the boundary weight map when the user does not choose (measured: docs/benchmarks.md, Boundary weight map).
    default_boundary_weight: ClassVar[float] = 0.0
    zero_means_unannotated: ClassVar[bool] = False  # sparse scribbles: 0 is "not annotated", not a class
    values_are_classes: ClassVar[bool] = True  # False when label values are ids, not classes (instances)

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    @property
    def object_classes(self) -> tuple[int, ...]:
        """The classes whose connected regions are the objects (for the boundary weight map)."""
        return tuple(i for i in range(self.n_classes) if i != self.background)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        """The encoding of this kind for ``labels``; ``InputError`` when they cannot be read so."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, "class_values": [int(v) for v in self.class_values], "background": self.background}

    @staticmethod
    def from_dict(d: dict) -> LabelEncoding:
        kind = d["kind"]
        if kind not in ENCODINGS:
            raise ValueError(f"unknown annotation kind {kind!r}")
        values = tuple(int(v) for v in d["class_values"])
        if not values or not all(0 <= v < 2**63 for v in values):
            raise ValueError(f"class values must be label values from 0 to 2**63 - 1, got {list(values)}")
        background = int(d.get("background", 0))
        if not 0 <= background < len(values):
            raise ValueError(f"background class {background} is not one of the {len(values)} classes")
        return ENCODINGS[kind](values, background)

    def describe(self) -> str:
        return f"{self.kind} labels {list(self.class_values)}"

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class index per pixel (int64), ``IGNORE`` where the pixel does not count. A search in
        the sorted class values, not a table as long as the largest id: huge ids cost no memory."""
        order = np.argsort(self.class_values)
        values = np.asarray(self.class_values, dtype=np.int64)[order]
        position = np.clip(np.searchsorted(values, labels), 0, len(values) - 1)
        return np.where(values[position] == labels, order[position], IGNORE).astype(np.int64)

    @property
    def labels_dtype(self) -> np.dtype:
        return smallest_uint_dtype(max(self.class_values))

    def raw_labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Label values (Y, X) from class probabilities (K, Y, X), pixel by pixel."""
        lookup = np.asarray(self.class_values).astype(self.labels_dtype)
        return lookup[probabilities.argmax(axis=0)]

    def needs_cleanup(self, cleanup: Cleanup | None) -> bool:
        """Whether ``cleanup`` changes anything for this kind (else labels can be made on the device)."""
        return cleanup is not None and (
            (cleanup.separate and self.separable)
            or cleanup.min_size > 1
            or cleanup.max_hole > 0
            or cleanup.threshold != 0.5
        )

    def labels_on_host(self, probabilities: np.ndarray, cleanup: Cleanup | None = None) -> np.ndarray:
        """Label values (Y, X) from class probabilities (K, Y, X), objects tidied by ``cleanup``:
        pixels it takes from objects get the background class, holes it fills the likeliest object class."""
        labels = self.raw_labels(probabilities)
        if not self.needs_cleanup(cleanup):
            return labels
        assert cleanup is not None
        foreground = self.foreground(probabilities, cleanup.threshold)
        if cleanup.threshold != 0.5:  # objects by the threshold, each pixel its likeliest object class
            objects = probabilities.copy()
            objects[self.background] = -1
            lookup = np.asarray(self.class_values).astype(self.labels_dtype)
            labels = np.where(foreground, lookup[objects.argmax(axis=0)], lookup[self.background])
        cleaned = cleanup.objects(probabilities, foreground, self.background, self.separable)
        lookup = np.asarray(self.class_values).astype(self.labels_dtype)
        labels[foreground & ~cleaned] = lookup[self.background]
        filled = cleaned & ~foreground
        if filled.any():
            likeliest = probabilities[:, filled]
            likeliest[self.background] = -1  # the likeliest object class
            labels[filled] = lookup[likeliest.argmax(axis=0)]
        return labels

    def foreground(self, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Where the objects are (Y, X bool): pixels whose likeliest class is not the background, or,
        with another ``threshold``, whose probability of not being background reaches it."""
        if threshold == 0.5:
            return probabilities.argmax(axis=0) != self.background
        return 1.0 - probabilities[self.background] >= threshold

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

    def objects(self, labels: np.ndarray) -> np.ndarray | None:
        """The objects of annotated labels (Y, X) as an instance map, to measure their size; None
        when the annotation does not outline objects."""
        return connected_components(labels != self.class_values[self.background])

    def instances(self, probabilities: np.ndarray, cleanup: Cleanup | None = None) -> np.ndarray:
        """Instance labels (Y, X, uint32) from class probabilities (K, Y, X): the connected regions
        of the objects (any class but the background), tidied by ``cleanup``."""
        probabilities = np.asarray(probabilities, np.float32)  # a volume's float16, compared as ever
        foreground = self.foreground(probabilities, cleanup.threshold if cleanup is not None else 0.5)
        if self.needs_cleanup(cleanup):
            assert cleanup is not None
            foreground = cleanup.objects(probabilities, foreground, self.background, self.separable)
        return connected_components(foreground)


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
        return cls(values, background_class(labels, values))


class SparseEncoding(LabelEncoding):
    kind = "sparse"
    label = "Sparse scribbles: 0 = not annotated"
    zero_means_unannotated = True

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        values = tuple(int(v) for v in np.unique(labels) if v != 0)
        if len(values) < 2:
            raise InputError(
                "sparse (scribble) annotation needs at least two label values, one per class "
                "(e.g. 1 = background, 2 = cells); 0 means 'not annotated'"
            )
        return cls(values)

    def objects(self, labels: np.ndarray) -> np.ndarray | None:
        return None  # scribbles do not outline whole objects


@dataclass(frozen=True)
class InstanceEncoding(LabelEncoding):
    class_values: tuple[int, ...] = (0, 1, 1)  # background, interior and boundary are all "object" but 0

    kind = "instances"
    label = "Instances: one id per object"
    default_output = "instances"
    separable = False  # its boundary class already keeps touching objects apart
    values_are_classes = False
    default_boundary_weight = 10.0  # touching nuclei split better (F1 +0.05 to +0.09 on real nuclei)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> LabelEncoding:
        return cls()

    def describe(self) -> str:
        return "instance labels: " + ", ".join(INSTANCE_CLASSES)

    def objects(self, labels: np.ndarray) -> np.ndarray | None:
        return labels

    @property
    def object_classes(self) -> tuple[int, ...]:
        return (1,)  # the interiors: the boundary class keeps touching objects apart

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

    def raw_labels(self, probabilities: np.ndarray) -> np.ndarray:
        return (probabilities[0] < 0.5).astype(np.uint8)

    def foreground(self, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        return probabilities[0] < 0.5 if threshold == 0.5 else 1.0 - probabilities[0] >= threshold

    def labels_on_device(self, probabilities: torch.Tensor) -> torch.Tensor:
        return (probabilities[0] < 0.5).to(torch.uint8)

    def instances(self, probabilities: np.ndarray, cleanup: Cleanup | None = None) -> np.ndarray:
        level = cleanup.threshold if cleanup is not None else 0.5
        instances = instances_from_probabilities(probabilities, threshold=1.0 - level)
        if cleanup is not None and cleanup.min_size > 1:
            small = np.bincount(instances.ravel()) < cleanup.min_size
            small[0] = False
            instances[small[instances]] = 0
        return instances


ENCODINGS: dict[str, type[LabelEncoding]] = {cls.kind: cls for cls in (DenseEncoding, SparseEncoding, InstanceEncoding)}
ANNOTATION_CHOICES = (AUTO, *ENCODINGS)


def background_class(labels: np.ndarray, values: tuple[int, ...]) -> int:
    """The class that surrounds or separates the objects: the one split into the fewest connected
    regions per annotated slice (one background around the nuclei, one membrane network between
    the cells), where every other class is many separate objects. Ties go to the lowest value."""
    from skimage.measure import label

    planes = labels.reshape(-1, *labels.shape[-2:])
    regions = [sum(int(label(plane == value, connectivity=1).max()) for plane in planes) for value in values]
    return int(np.argmin(regions))


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
