"""Objects of a 3D model, found in 3D: the whole volume at once or, when that would not fit in
memory, slab by slab as the probabilities stream in.

One seeded watershed over a volume's class probabilities (``objects_in_3d``) holds them (as float16)
beside the watershed's own arrays: about 37 bytes a voxel, 37 GB for 1,000 slices of 1024². A volume
of more than ``SLAB_VOXELS`` voxels is therefore cut into slabs of slices, and each slab's objects
are found on it and a halo of slices past each end (``slab_plan``), so that an object crossing a
border is seen by both slabs (as a Dask cluster's tasks do, ``scale/volumes.py``). Only a slab's own
slices are kept. Slabs are done in order, so an object of a slab takes the id of the object of the
slab before it that it matches (IoU ≥ 0.5) on either slice of their border, and a new id otherwise:
ids are final as each slice is yielded, unique in the volume, and memory is one slab and its halos
whatever the depth.

The halo need not hold a whole object: a slab's voxels of an object only need the object's seed
(its core, where the interior is most likely), which lies within half its depth. On the ovule nuclei
(curated labels made into class probabilities, objects 19 slices deep) halos of 8, 6 and 4 slices
found exactly the whole volume's objects, 3 slices missed 38 of 150,426 voxels: so the halo is a
quarter of an object's depth (``HALO_SHARE``), more when the block has room.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from ..labels.postprocess import Cleanup, matching_ids
from ..models.trained import TrainedModel
from .reading import VolumeGeometry

OBJECT_HALO = 16  # slices read past each end of a slab to find its objects, when the model does not say
OBJECT_HALO_RANGE = (8, 64)  # at least, at most, from the model's object size
SLAB_VOXELS = 2**24  # a volume with more voxels has its objects found slab by slab (about 0.6 GB a block)
HALO_SHARE = 0.25  # the halo is at least this share of an object's depth (see the module)


def object_halo(model: TrainedModel) -> int:
    """Slices read past each end of a slab to find its objects: one object's depth (the model's
    object size, in slices by its voxel size), within ``OBJECT_HALO_RANGE``; ``OBJECT_HALO`` when the
    model does not know its objects' size or voxel size."""
    if model.object_size is None or model.voxel_size is None:
        return OBJECT_HALO
    z, y, _ = model.voxel_size
    low, high = OBJECT_HALO_RANGE
    return int(min(high, max(low, math.ceil(model.object_size * y / z))))


def slab_plan(model: TrainedModel, geometry: VolumeGeometry) -> tuple[int, int]:
    """(slices a slab of ``volume_objects`` holds, slices read past each of its ends): the whole
    volume and none when it has at most ``SLAB_VOXELS`` voxels; else a block of slab and halos
    within ``SLAB_VOXELS`` (at least 3 slices) with the halo a quarter of the block, at least
    ``HALO_SHARE`` of an object's depth and at most one object's depth (``object_halo``). A block too
    thin for that grows (slab as deep as the halo): on slices over about 1024², objects are found in
    more than ``SLAB_VOXELS`` voxels at a time rather than cut short."""
    plane = geometry.height * geometry.width
    if geometry.n_slices * plane <= SLAB_VOXELS:
        return geometry.n_slices, 0
    slices, depth = max(3, SLAB_VOXELS // plane), object_halo(model)
    halo = min(depth, max(slices // 4, math.ceil(depth * HALO_SHARE)))
    return max(slices - 2 * halo, halo), halo


def objects_in_3d(model: TrainedModel, probabilities: np.ndarray, cleanup: Cleanup | None) -> np.ndarray:
    """The objects (uint32 ids) of a stack's class probabilities (Z, K, Y, X), found in 3D."""
    volume = np.moveaxis(np.asarray(probabilities), 1, 0)  # float16 as kept: each encoding takes it
    return model.encoding.instances(volume, cleanup).astype(np.uint32, copy=False)


def volume_objects(
    model: TrainedModel,
    slices: Iterable[tuple[int, np.ndarray]],
    geometry: VolumeGeometry,
    cleanup: Cleanup | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, uint32 object ids) of every slice, in order, from the (index, class probabilities)
    of every slice in order (see the module)."""
    total, (depth, halo) = geometry.n_slices, slab_plan(model, geometry)
    kept: dict[int, np.ndarray] = {}
    border = Border()
    start = 0
    for index, probabilities in slices:
        kept[index] = np.asarray(probabilities, np.float16)
        while start < total and index >= min(total, start + depth + halo) - 1:  # the slab and its halos are in
            stop = min(start + depth, total)
            low, high = max(0, start - halo), min(total, stop + halo)
            block = np.stack([kept[i] for i in range(low, high)])
            for i in [i for i in kept if i < stop - halo]:  # only the next slab's halo is kept
                del kept[i]
            found = objects_in_3d(model, block, cleanup)
            del block
            lookup = border.volume_ids(found, start - low, stop - low)
            for i in range(start, stop):
                yield i, lookup[found[i - low]]
            border.remember(lookup, found, stop - low)
            start = stop


class Border:
    """The border between the slab just done and the next: the last slice as it was yielded and the
    next slab's first slice as this slab saw it, both in the volume's ids; and the next free id."""

    def __init__(self) -> None:
        self.last: np.ndarray | None = None
        self.ahead: np.ndarray | None = None
        self.next_id = 1

    def volume_ids(self, found: np.ndarray, first: int, end: int) -> np.ndarray:
        """The lookup from a slab's own ids (``found``, its own slices ``first:end``) to the volume's:
        the previous slab's id for an object matching one of it on either border slice, else a new one."""
        matches: dict[int, int] = {}
        views = ((self.last, first - 1), (self.ahead, first)) if self.last is not None else ()
        for previous, index in views:
            if previous is not None:
                for mine, theirs in matching_ids(previous, found[index]).items():
                    matches.setdefault(mine, theirs)
        lookup = np.zeros(int(found.max(initial=0)) + 1, np.uint32)
        own = np.unique(found[first:end])
        for local in own[own > 0].tolist():
            if local in matches:
                lookup[local] = matches[local]
            else:
                lookup[local], self.next_id = self.next_id, self.next_id + 1
        return lookup

    def remember(self, lookup: np.ndarray, found: np.ndarray, end: int) -> None:
        """Keep the slab's last slice and its view of the next one (objects only in the halo: 0)."""
        self.last = lookup[found[end - 1]]
        self.ahead = lookup[found[end]] if end < len(found) else None
