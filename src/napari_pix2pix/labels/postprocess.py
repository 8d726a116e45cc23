"""From class probabilities to labels and instances: the host-side conversions of one slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer type holding ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def connected_components(mask: np.ndarray) -> np.ndarray:
    """Instances for a class model: the 4-connected regions of an object mask, as uint32 ids."""
    from skimage.measure import label

    return label(mask, connectivity=1).astype(np.uint32)


#: How far an object's interior probability must stand above the saddle joining it to a neighbour
#: for the two to be seeded apart (an h-maximum), after a Gaussian smoothing of this many pixels in
#: the plane. Measured on nuclei the models never saw: the starting model's object F1 on nuclei-dev
#: rose from 0.771 (seeds: interior > 0.5) to 0.837, on the shipped sample from 0.771 to 0.797
#: (docs/benchmarks.md, Touching nuclei).
SEED_DYNAMIC = 0.1
SEED_SMOOTHING = 1.0
#: In a volume, seeds are the connected regions where the interior probability exceeds this (the
#: foreground and the watershed stay at 0.5; foreground no seed reaches stays background): the necks
#: joining touching nuclei in 3D fall below it. On the ovule nuclei 0.7 beat 0.5 on seven 3D models
#: (object F1 0.49 → 0.56); on five later ones (binned and not), scored at 0.8, 1 and 1.25× the
#: held-out slices' contrast, 0.9 beat 0.7 in 14 of 15 cases (mean 0.50 → 0.55); 0.95 lost on the
#: models that were not binned (docs/benchmarks.md, Quality in 3D).
VOLUME_SEED_LEVEL = 0.9


def instances_from_probabilities(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    dynamic: float = SEED_DYNAMIC,
    smoothing: float = SEED_SMOOTHING,
    seed_level: float | None = None,
) -> np.ndarray:
    """Instance labels from (background, interior, boundary) probabilities, (3, Y, X) or (3, Z, Y, X);
    the objects are where the background's probability is below ``threshold``.

    In a slice, each object's seed is a peak of the (lightly smoothed) interior probability that
    stands at least ``dynamic`` above the saddle joining it to a higher one, within the interiors
    (> 0.5): two touching nuclei joined by a bridge of likely interior are still seeded
    apart when the bridge dips, while a nucleus's own noise does not split it. A watershed of
    boundary minus interior grows the seeds over the whole predicted foreground. ``dynamic`` 0 seeds
    every connected interior region instead, as volumes (3D models) always are. Seeds lie where the
    interior exceeds ``seed_level``: by default 0.5 in a slice, ``VOLUME_SEED_LEVEL`` in a volume.
    On the ovule nuclei the peaks gained as often as they lost, and the connected interiors of a
    slab are those of the whole volume, which keeps a cluster's slabs agreeing with one process (``scale/volumes.py``).
    """
    from scipy import ndimage
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    # float16 probabilities (a volume's, kept so) are compared and subtracted in float32 without a
    # float32 copy of all three classes: the same objects as from float32, in less memory.
    foreground = probabilities[0] < np.float32(threshold)
    interior = probabilities[1]
    if seed_level is None:
        seed_level = 0.5 if interior.ndim == 2 else VOLUME_SEED_LEVEL
    seeds = (interior > np.float32(seed_level)) & foreground
    if dynamic > 0 and seeds.any() and interior.ndim == 2:
        smooth = ndimage.gaussian_filter(interior.astype(np.float32), smoothing) if smoothing else interior
        seeds &= h_maxima(smooth, dynamic).astype(bool)
    markers = label(seeds).astype(np.int32, copy=False)  # the watershed's output takes the markers' type
    del seeds
    elevation = np.subtract(probabilities[2], interior, dtype=np.float32)
    found = watershed(elevation, markers, mask=foreground)
    del elevation, markers
    return found.view(np.uint32)  # ids ≥ 0: the same bits, no copy


def renumber_instances(current: np.ndarray, previous: np.ndarray | None, next_id: int) -> tuple[np.ndarray, int]:
    """Give the objects of one slice ids unique in the stack, continuing those of ``previous``.

    An object whose overlap with an object of the previous slice has an IoU of at least 0.5 takes
    that object's id (IoU > 0.5 makes the match one-to-one); every other object gets a new id from
    ``next_id``. Returns the renumbered slice and the next free id.
    """
    ids = np.unique(current)
    ids = ids[ids > 0]
    matches = matching_ids(previous, current) if previous is not None and ids.size else {}
    lookup = np.zeros(int(current.max()) + 1, dtype=np.uint32)
    for object_id in ids:
        if int(object_id) in matches:
            lookup[object_id] = matches[int(object_id)]
        else:
            lookup[object_id] = next_id
            next_id += 1
    return lookup[current], next_id


def matching_ids(previous: np.ndarray, current: np.ndarray) -> dict[int, int]:
    """The objects of ``current`` that are objects of ``previous`` (two label maps of the same
    shape): {current id: previous id} for the pairs whose overlap has an IoU of at least 0.5, which
    makes the match one-to-one."""
    both = (previous > 0) & (current > 0)
    pairs, overlap = np.unique(np.stack([previous[both], current[both]]), axis=1, return_counts=True)
    if not overlap.size:
        return {}
    previous_area = np.bincount(previous.ravel())[pairs[0]]
    current_area = np.bincount(current.ravel())[pairs[1]]
    iou = overlap / (previous_area + current_area - overlap)
    return {int(c): int(p) for p, c, v in zip(pairs[0], pairs[1], iou) if v >= 0.5}


def separating_lines(
    probabilities: np.ndarray,
    foreground: np.ndarray,
    dynamic: float = 0.06,
    smoothing: float = 1.0,
    background: int = 0,
) -> np.ndarray:
    """The one-pixel lines (Y, X bool) that separate touching objects of a class map.

    Each object's seed is a regional maximum of the (lightly smoothed) object probability
    ``1 - probabilities[background]`` that stands at least ``dynamic`` above the saddle joining it to a
    higher one (an h-maximum), so a faint stretch of membrane or a narrow neck between two cells
    still separates them while noise inside a cell does not. A watershed of the object probability
    grows the seeds until they meet, where it leaves a line.
    """
    from scipy import ndimage
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    objectness = 1.0 - probabilities[background].astype(np.float64)
    if smoothing:
        objectness = ndimage.gaussian_filter(objectness, smoothing)
    seeds = label(h_maxima(objectness, dynamic).astype(bool) & foreground, connectivity=1)
    if seeds.max() < 2:
        return np.zeros(foreground.shape, bool)
    return watershed(-objectness, seeds, watershed_line=True) == 0


def remove_small_regions(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its 4-connected regions of fewer than ``min_size`` pixels."""
    from skimage.measure import label

    if min_size <= 1 or not mask.any():
        return mask
    regions = label(mask, connectivity=1)
    small = np.bincount(regions.ravel()) < min_size
    small[0] = False
    return mask & ~small[regions]


def fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """``mask`` with its holes (background regions not touching the border) of at most ``max_hole`` pixels filled."""
    from skimage.measure import label

    if max_hole <= 0 or mask.all():
        return mask
    holes = label(~mask, connectivity=1)
    sizes = np.bincount(holes.ravel())
    faces = [np.take(holes, [0, -1], axis=axis).ravel() for axis in range(holes.ndim)]  # 2D or 3D
    border = np.unique(np.concatenate(faces))
    fill = sizes <= max_hole
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


@dataclass(frozen=True)
class Cleanup:
    """How predicted objects are tidied before they become labels or instances.

    ``separate``: draw watershed lines between touching objects (see ``separating_lines``), so a gap
    in a thin membrane does not merge two cells; ``dynamic`` is how far a seed must stand out.
    ``min_size``: remove objects of fewer pixels. ``max_hole``: fill holes of at most this many pixels.
    ``threshold``: a pixel belongs to an object when the probability of not being background is at
    least this (0.5: the likeliest class decides, as without a threshold).
    """

    separate: bool = True
    dynamic: float = 0.06
    min_size: int = 0
    max_hole: int = 0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.dynamic < 1:
            raise InputError(f"the seed dynamic must be between 0 and 1, got {self.dynamic}")
        if not 0 < self.threshold < 1:
            raise InputError(f"the probability threshold must be between 0 and 1, got {self.threshold}")
        for name in ("min_size", "max_hole"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name.replace('_', ' ')} must not be negative, got {getattr(self, name)}")

    def objects(
        self, probabilities: np.ndarray, foreground: np.ndarray, background: int = 0, separable: bool = True
    ) -> np.ndarray:
        """The cleaned object mask (Y, X bool) of one slice, the objects being all classes but ``background``."""
        if self.separate and separable:
            foreground = foreground & ~separating_lines(probabilities, foreground, self.dynamic, background=background)
        return remove_small_regions(fill_small_holes(foreground, self.max_hole), self.min_size)


def typical_object_size(instances: np.ndarray | list[np.ndarray]) -> float | None:
    """The median equivalent diameter, in pixels, of the objects of an instance map (Y, X) or
    (Z, Y, X), or of a list of maps (Y, X) of any sizes, slice by slice; None when it holds fewer
    than three objects."""
    planes = instances.reshape(-1, *instances.shape[-2:]) if isinstance(instances, np.ndarray) else instances
    # Counts of the ids present (not a bincount, whose size follows the largest id: 2⁴⁵ is a user's right).
    areas = np.concatenate([np.unique(plane[plane > 0], return_counts=True)[1] for plane in planes])
    if areas.size < 3:
        return None
    return float(np.sqrt(4 * np.median(areas) / np.pi))
