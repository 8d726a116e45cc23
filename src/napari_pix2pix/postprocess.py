"""From class probabilities to labels and instances: the host-side conversions of one slice."""

from __future__ import annotations

import numpy as np


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer type holding ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def connected_components(probabilities: np.ndarray) -> np.ndarray:
    """Instances for a class model: connected regions of any class but the first."""
    from skimage.measure import label

    return label(probabilities.argmax(axis=0) > 0).astype(np.uint32)


def instances_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Instance labels from (background, interior, boundary) probabilities.

    Object interiors, which the boundary class keeps apart where objects touch, seed a watershed
    that grows them over the whole predicted foreground.
    """
    from skimage.measure import label
    from skimage.segmentation import watershed

    foreground = probabilities[0] < threshold
    markers = label((probabilities[1] > threshold) & foreground)
    return watershed(probabilities[2] - probabilities[1], markers, mask=foreground).astype(np.uint32)


def renumber_instances(current: np.ndarray, previous: np.ndarray | None, next_id: int) -> tuple[np.ndarray, int]:
    """Give the objects of one slice ids unique in the stack, continuing those of ``previous``.

    An object whose overlap with an object of the previous slice has an IoU of at least 0.5 takes
    that object's id (IoU > 0.5 makes the match one-to-one); every other object gets a new id from
    ``next_id``. Returns the renumbered slice and the next free id.
    """
    ids = np.unique(current)
    ids = ids[ids > 0]
    matches: dict[int, int] = {}
    if previous is not None and ids.size:
        both = (previous > 0) & (current > 0)
        pairs, overlap = np.unique(np.stack([previous[both], current[both]]), axis=1, return_counts=True)
        if overlap.size:
            previous_area = np.bincount(previous.ravel())[pairs[0]]
            current_area = np.bincount(current.ravel())[pairs[1]]
            iou = overlap / (previous_area + current_area - overlap)
            matches = {int(c): int(p) for p, c, v in zip(pairs[0], pairs[1], iou) if v >= 0.5}
    lookup = np.zeros(int(current.max()) + 1, dtype=np.uint32)
    for object_id in ids:
        if int(object_id) in matches:
            lookup[object_id] = matches[int(object_id)]
        else:
            lookup[object_id] = next_id
            next_id += 1
    return lookup[current], next_id
