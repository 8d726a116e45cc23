"""3D models on a Dask cluster: the volume cut into slabs of slices, each predicted by a task that
reads a z halo past its ends, its slices written into the OME-Zarr output.

The slabs start on the grid of the whole-volume pass (``prediction.volume.z_grid``) and a task
predicts its slices with the blocks of that pass (reading ``prediction.volume.Z_HALO`` slices past
its ends), so class labels and probabilities equal a single-process run. Instances are found in 3D
(as one process finds them, ``convert_probabilities``) on the slab and ``object_halo`` slices past
each end, so an object crossing a border is seen by both tasks; a task writes only its own slices.
It returns the slices on either side of each of its borders as it saw them: objects of two
neighbouring slabs that match there (IoU ≥ 0.5 on either slice) are one object, and a last pass
gives every object one id, unique in the volume. Memory per task: its slab and halo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..labels.postprocess import matching_ids, smallest_uint_dtype
from ..models.trained import TrainedModel
from .tasks import SlabOutcome, SlabPlan, collect, halted, relabel, task_inputs

Node = tuple[int, int]  # (slab, the slab's own id of an object)


@dataclass(frozen=True)
class VolumeSlabOutcome(SlabOutcome):
    """A 3D task's outcome for objects: the ids it wrote, and the two slices at each of its borders
    as it saw them, ``low`` (the slice before the slab, its first slice) and ``high`` (its last
    slice, the slice after it); None at the volume's ends."""

    ids: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def predict_volume_slab(
    model_path: str, source: str, out_path: str, start: int, stop: int, plan: SlabPlan, halt: str | None = None
) -> SlabOutcome:
    """One task: predict slices ``start:stop`` of ``source`` with a 3D model into the Zarr array
    ``out_path``; the outcome holds the one line of an ``InputError`` when the input is bad. It stops
    before its next write once the event ``halt`` is set."""
    from ..io.omezarr import open_for_writing
    from ..labels.outputs import get_output
    from ..prediction.reading import volume_geometry
    from ..prediction.volume import rescaled_volume_probabilities

    if halted(halt):
        return SlabOutcome(stopped=True)
    try:
        model, image = task_inputs(model_path, source, plan)
        out, settings = open_for_writing(out_path), plan.settings
        assert settings.output is not None
        kind = get_output(settings.output)
        if kind.objects:
            return _slab_objects(model, image, out, (start, stop), plan, halt)
        convert = kind.on_host(model.encoding, settings.cleanup)
        geometry = volume_geometry(image.shape, model)
        for index, probabilities in rescaled_volume_probabilities(
            model, image, geometry, settings, plan.factors, slices=range(start, stop)
        ):
            if halted(halt):
                return SlabOutcome(stopped=True)
            out[index] = convert(probabilities)
        return SlabOutcome()
    except InputError as error:
        return SlabOutcome(error=str(error))


def _slab_objects(
    model: TrainedModel, image: Any, out: Any, slab: tuple[int, int], plan: SlabPlan, halt: str | None
) -> SlabOutcome:
    """A task's objects: found in 3D on its slab and ``plan.object_halo`` slices past each end, only
    the slab's slices written, its ids numbered in the slab."""
    from ..prediction.pipeline import convert_probabilities
    from ..prediction.reading import volume_geometry
    from ..prediction.volume import rescaled_volume_probabilities

    (start, stop), settings = slab, plan.settings
    geometry = volume_geometry(image.shape, model)
    low, high = max(0, start - plan.object_halo), min(geometry.n_slices, stop + plan.object_halo)
    kept = np.empty((high - low, model.encoding.n_classes, geometry.height, geometry.width), np.float16)
    for index, probabilities in rescaled_volume_probabilities(
        model, image, geometry, settings, plan.factors, slices=range(low, high)
    ):
        if halted(halt):
            return SlabOutcome(stopped=True)
        kept[index - low] = probabilities
    assert settings.output is not None
    instances = convert_probabilities(model, kept, settings.output, settings.cleanup)
    del kept
    for index in range(start, stop):
        if halted(halt):
            return SlabOutcome(stopped=True)
        out[index] = instances[index - low]
    ids = np.unique(instances[start - low : stop - low])
    ids = ids[ids > 0]
    dtype = smallest_uint_dtype(int(instances.max(initial=0)))

    def seen(first: int) -> np.ndarray:  # slices first and first + 1 as this task saw them
        return instances[first - low : first - low + 2].astype(dtype)

    return VolumeSlabOutcome(
        largest=int(ids.max(initial=0)),
        ids=ids,
        low=seen(start - 1) if start > 0 else None,
        high=seen(stop - 1) if stop < geometry.n_slices else None,
    )


class SlabLinks:
    """Which objects of neighbouring slabs are one object, and their ids in the volume.

    A border is compared as soon as both its slabs are in, and their views of it are then dropped,
    so the caller holds few slices at once. On each of the border's two slices, an object of one
    slab and an object of the other whose IoU is at least 0.5 are linked; linked objects (through
    any number of borders) get one id. Ids are numbered from 1 in the order of the slabs and of
    their own ids, with no gaps."""

    def __init__(self, n_slabs: int) -> None:
        self.ids: list[np.ndarray] = [np.zeros(0, np.int64)] * n_slabs
        self.largest = [0] * n_slabs
        self.low: dict[int, np.ndarray] = {}
        self.high: dict[int, np.ndarray] = {}
        self.parent: dict[Node, Node] = {}

    def add(self, slab: int, outcome: SlabOutcome) -> None:
        """Take a task's outcome, and compare the borders both of whose slabs are now in."""
        assert isinstance(outcome, VolumeSlabOutcome) and outcome.ids is not None
        self.ids[slab], self.largest[slab] = outcome.ids, outcome.largest
        if outcome.low is not None:
            self.low[slab] = outcome.low
        if outcome.high is not None:
            self.high[slab] = outcome.high
        for below in (slab, slab + 1):  # the borders above and below the slab
            if below - 1 in self.high and below in self.low:
                self.link(below - 1, self.high.pop(below - 1), self.low.pop(below))

    def link(self, above: int, last: np.ndarray, first: np.ndarray) -> None:
        """Link the objects of slab ``above`` and of the next one that match on the two slices of
        their border, as slab ``above`` saw them (``last``) and as the next one did (``first``)."""
        for mine, theirs in zip(last, first):
            for their_id, my_id in matching_ids(mine, theirs).items():
                self.union((above, my_id), (above + 1, their_id))

    def find(self, node: Node) -> Node:
        root = node
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while node != root:  # shorten the path for the next look-up
            self.parent[node], node = root, self.parent.get(node, root)
        return root

    def union(self, one: Node, other: Node) -> None:
        roots = sorted((self.find(one), self.find(other)))
        if roots[0] != roots[1]:
            self.parent[roots[1]] = roots[0]

    def lookups(self, dtype: np.dtype) -> list[np.ndarray]:
        """Per slab, the lookup from its own ids to the volume's."""
        numbers: dict[Node, int] = {}
        result = []
        for slab, ids in enumerate(self.ids):
            lookup = np.zeros(self.largest[slab] + 1, dtype)
            for local in ids.tolist():
                lookup[local] = numbers.setdefault(self.find((slab, local)), len(numbers) + 1)
            result.append(lookup)
        return result


def predict_volume_on_cluster(
    client: Any,
    paths: tuple[str, str, str],
    plan: SlabPlan,
    parts: list[tuple[int, int]],
    halt: Any,
    advance: Callable[[int], None],
    dtype: np.dtype,
) -> None:
    """Predict with a 3D model on the workers of ``client``: (model, source, output) ``paths``
    absolute, one task per slab of ``parts``; objects then get their ids in the volume (``dtype``)."""
    from ..labels.outputs import get_output

    assert plan.settings.output is not None
    objects = get_output(plan.settings.output).objects
    links = SlabLinks(len(parts))

    def done(i: int, outcome: SlabOutcome) -> None:
        if objects:
            links.add(i, outcome)
        advance(parts[i][1] - parts[i][0])

    tasks = [(predict_volume_slab, *paths, start, stop, plan, halt.name) for start, stop in parts]
    collect([client.submit(*task, pure=False) for task in tasks], halt, done)
    if objects:
        relabel(client, paths[2], parts, links.lookups(dtype), halt)
