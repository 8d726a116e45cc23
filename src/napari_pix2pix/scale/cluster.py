"""Prediction on a Dask cluster: a volume cut into slabs of slices, one task per slab.

``napari-pix2pix predict MODEL IN --out OUT.zarr --workers N`` starts a local ``dask.distributed``
cluster of N processes; ``--scheduler ADDRESS`` uses a running one (e.g. started by dask-jobqueue on
SLURM). Each task loads the model file, runs the same engine on its slab and writes its slices into
the OME-Zarr output (so workers need the model, input and output on a shared file system; the paths
they are given are absolute, since their working folder is not the caller's). What depends on the
whole volume is settled once, before the tasks: the rescaling to the model's object or pixel size
and, for a per-image normalisation, the volume's own percentiles. Instance ids are made unique and
linked across slab borders afterwards, exactly as one process links them slice by slice, so the
output equals a single-process run. A 3D model's slabs are predicted with a z halo, their objects
merged across the borders by overlap (see ``scale.volumes``).

A slab's bad input comes back as the engine's one line (slices numbered in the volume), returned by
the task rather than raised, so no worker logs a failure. On any failure every task is told to stop
(a ``distributed.Event``) and waited for, so none still writes when the output is removed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_finite, check_numeric
from ..errors import InputError
from ..labels.postprocess import renumber_instances
from ..prediction.objects3d import object_halo
from ..prediction.settings import PredictionSettings
from .tasks import SlabOutcome, SlabPlan, collect, halted, relabel, slabs, task_inputs
from .volumes import predict_volume_on_cluster

WORKER_WAIT_S = 30.0  # how long a scheduler given by address may take to have a worker


class SlabView:
    """Slices ``start:stop`` of a volume, read one at a time as the engine asks for them. A slice
    with NaN or infinite pixels is refused here, with its number in the volume (the engine numbers a
    slab's slices from 0)."""

    def __init__(self, image: Any, start: int, stop: int) -> None:
        self.image, self.start = image, start
        self.shape = (stop - start, *(int(n) for n in image.shape[1:]))
        self.dtype = np.dtype(image.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: int) -> np.ndarray:
        plane = np.asarray(self.image[self.start + index])
        check_numeric(plane.dtype)
        check_finite(plane, f"slice {self.start + index}")
        return plane


def predict_slab(
    model_path: str, source: str, out_path: str, start: int, stop: int, plan: SlabPlan, halt: str | None = None
) -> SlabOutcome:
    """One task: predict slices ``start:stop`` of ``source`` into the Zarr array ``out_path`` as
    ``plan`` says; its outcome holds the largest id written (0 for outputs that are not objects), or
    the one line of an ``InputError``. It stops before its next write once the event ``halt`` is set."""
    from ..io.omezarr import open_for_writing
    from ..prediction.pipeline import predict_slices
    from ..prediction.reading import volume_geometry

    if halted(halt):
        return SlabOutcome(stopped=True)
    try:
        model, image = task_inputs(model_path, source, plan)
        slab = SlabView(image, start, stop)
        out = open_for_writing(out_path)
        largest = 0
        results = predict_slices(model, slab, volume_geometry(slab.shape, model), plan.settings, plan.factor)
        for result in results:
            if halted(halt):
                return SlabOutcome(stopped=True)
            out[start + result.index] = result.data
            largest = max(largest, int(result.data.max(initial=0)))
        return SlabOutcome(largest)
    except InputError as error:
        return SlabOutcome(error=str(error))


def volume_ids(out: Any, parts: list[tuple[int, int]], largest: list[int], link: bool) -> list[np.ndarray]:
    """Per slab, the lookup from its own ids to the volume's: objects continuing from the slice before
    the slab keep that slice's ids, the others are numbered on in the order one process numbers them."""
    lookups, previous, next_id = [], None, 1
    for (start, stop), top in zip(parts, largest):
        first = np.asarray(out[start])
        linked, _ = renumber_instances(first, previous if link else None, next_id)
        lookup = np.zeros(top + 1, dtype=out.dtype)
        present = np.unique(first)
        present = present[present > 0]
        for local in present:  # ids of the slab's first slice: as one process numbers that slice
            lookup[local] = linked[first == local][0]
        next_id = max(next_id, int(linked.max(initial=0)) + 1)
        for local in range(1, top + 1):  # objects that start later in the slab: numbered on, in order
            if local not in present:
                lookup[local] = next_id
                next_id += 1
        lookups.append(lookup)
        previous = lookup[np.asarray(out[stop - 1])]
    return lookups


def predict_on_cluster(
    client: Any,
    model_path: str,
    source: str,
    out_array: Any,
    settings: PredictionSettings,
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Predict ``source`` into the Zarr array ``out_array`` with the workers of ``client``: what
    depends on the whole volume (its normalisation, the rescaling to the model's pixel or object
    size) is settled here, once, exactly as one process settles it."""
    from distributed import Event

    given, model_path, source = source, os.path.abspath(model_path), os.path.abspath(source)
    out_path = os.path.abspath(Path(out_array.store_path.store.root) / out_array.path)
    plan, parts = _plan(client, model_path, source, settings)
    halt = Event(f"napari-pix2pix-stop-{uuid.uuid4().hex}", client=client)
    try:
        if plan.dims == 3:
            paths = (model_path, source, out_path)
            predict_volume_on_cluster(client, paths, plan, parts, halt, advance, out_array.dtype)
        else:
            _predict_planes(client, (model_path, source, out_path), out_array, plan, parts, halt, advance)
    except InputError as error:  # the workers name the image by its absolute path: show the one given
        raise InputError(str(error).replace(source, str(given))) from None
    finally:
        with contextlib.suppress(Exception):
            halt.clear()


def _predict_planes(
    client: Any,
    paths: tuple[str, str, str],
    out_array: Any,
    plan: SlabPlan,
    parts: list[tuple[int, int]],
    halt: Any,
    advance: Callable[[int], None],
) -> None:
    """A 2D model's slabs, then (for objects) their ids linked across the slab borders."""
    largest = [0] * len(parts)

    def done(i: int, outcome: SlabOutcome) -> None:
        largest[i] = outcome.largest
        advance(parts[i][1] - parts[i][0])

    submit = [(predict_slab, *paths, s, e, plan, halt.name) for s, e in parts]
    collect([client.submit(*task, pure=False) for task in submit], halt, done)
    if _objects(plan):
        lookups = volume_ids(out_array, parts, largest, plan.settings.link_slices)
        relabel(client, paths[2], parts, lookups, halt)


def _plan(client: Any, model_path: str, source: str, settings: PredictionSettings) -> tuple[SlabPlan, list]:
    """What the tasks share (settled on the whole volume here, as one process settles it), and the
    slabs: a 3D model's on the grid of the whole-volume pass, its voxel size checked here, once."""
    from ..io import read_image
    from ..io.pretrained import load_model_or_pretrained
    from ..prediction.reading import for_this_image, volume_geometry
    from ..prediction.rescale import (
        VoxelSizeNote,
        rescaling,
        voxel_factors,
    )
    from ..prediction.volume import z_grid

    model = load_model_or_pretrained(model_path)
    image, _ = read_image(source)
    geometry = volume_geometry(image.shape, model)
    if not geometry.is_stack:
        raise InputError("--workers predicts stacks (Z, Y, X); predict a single image without it")
    resolved = for_this_image(model, image, geometry)
    settings = replace(settings, output=settings.output_for(model))
    normalisation = resolved.normalisation if model.normalisation.per_image else None
    workers = len(client.scheduler_info()["workers"])
    if model.config.dims == 3:
        factors = voxel_factors(model, settings.voxel_size)
        if factors is not None:  # each task scales the slices its slab needs
            warnings.warn(VoxelSizeNote(model, settings.voxel_size, factors), stacklevel=3)
        plan = SlabPlan(
            settings, 1.0, normalisation, dims=3, object_halo=object_halo(model), factors=factors or (1.0, 1.0, 1.0)
        )
        return plan, slabs(geometry.n_slices, workers, z_grid(resolved, geometry, settings))
    plan = SlabPlan(settings, rescaling(resolved, image, geometry, settings), normalisation)
    return plan, slabs(geometry.n_slices, workers)


def _objects(plan: SlabPlan) -> bool:
    """Whether the plan's output is objects, whose ids are made the volume's after the slabs."""
    from ..labels.outputs import get_output

    assert plan.settings.output is not None
    return get_output(plan.settings.output).objects
