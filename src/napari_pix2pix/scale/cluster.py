"""Prediction on a Dask cluster: a volume cut into slabs of slices, one task per slab.

``napari-pix2pix predict MODEL IN --out OUT.zarr --workers N`` starts a local ``dask.distributed``
cluster of N processes; ``--scheduler ADDRESS`` uses a running one (e.g. started by dask-jobqueue on
SLURM). Each task loads the model file, runs the same engine on its slab and writes its slices into
the OME-Zarr output (so workers need the model, input and output on a shared file system). What
depends on the whole volume is settled once, before the tasks: the rescaling to the model's object
size and, for a per-image normalisation, the volume's own percentiles. Instance ids are made unique
and linked across slab borders afterwards, exactly as one process links them slice by slice, so the
output equals a single-process run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels.postprocess import renumber_instances

SLABS_PER_WORKER = 4  # enough tasks to balance the load, few enough that each has work


def slabs(n_slices: int, workers: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive slabs covering ``n_slices``."""
    size = max(1, math.ceil(n_slices / (SLABS_PER_WORKER * max(1, workers))))
    return [(start, min(n_slices, start + size)) for start in range(0, n_slices, size)]


def predict_slab(model_path: str, source: str, out_path: str, start: int, stop: int, settings: dict) -> int:
    """One task: predict slices ``start:stop`` of ``source`` into the Zarr array ``out_path``; returns
    the largest id written (0 for outputs that are not objects)."""
    import zarr

    from ..io import load_model, read_image
    from ..prediction.pipeline import iter_predict

    model = load_model(model_path)
    if settings["normalisation"] is not None:
        model = replace(model, normalisation=settings["normalisation"])
    image, _ = read_image(source)
    out = zarr.open_array(out_path, mode="r+")
    largest = 0
    options = {k: v for k, v in settings.items() if k != "normalisation"}
    for result in iter_predict(model, image[start:stop], **options):
        out[start + result.index] = result.data
        largest = max(largest, int(result.data.max(initial=0)))
    return largest


def relabel_slab(out_path: str, start: int, stop: int, lookup: np.ndarray) -> None:
    """One task: give a slab's objects their ids in the whole volume."""
    import zarr

    out = zarr.open_array(out_path, mode="r+")
    for index in range(start, stop):
        out[index] = lookup[np.asarray(out[index])]


def volume_ids(out, parts: list[tuple[int, int]], largest: list[int], link: bool) -> list[np.ndarray]:
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
    client,
    model_path: str,
    source: str,
    out_array,
    output: str,
    options: dict,
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Predict ``source`` into the Zarr array ``out_array`` with the workers of ``client``."""
    from distributed import as_completed

    from ..io import load_model, read_image
    from ..labels.outputs import get_output
    from ..prediction.pipeline import for_this_image, scale_factor, volume_geometry

    model = load_model(model_path)
    image, _ = read_image(source)
    geometry = volume_geometry(image.shape, model.config.in_channels)
    if not geometry.is_stack:
        raise InputError("--workers predicts stacks (Z, Y, X); predict a single image without it")
    engine = {k: options[k] for k in ("tile_size", "overlap", "batch_size", "device", "tta")}
    resolved = for_this_image(model, image, geometry)
    factor = scale_factor(resolved, image, geometry, options["object_size"], **engine)
    settings = {
        **options,
        "output": output,
        "object_size": None if factor == 1.0 or model.object_size is None else model.object_size / factor,
        "normalisation": resolved.normalisation if model.normalisation.per_image else None,
    }
    out_path = str(Path(out_array.store_path.store.root) / out_array.path)
    parts = slabs(geometry.n_slices, len(client.scheduler_info()["workers"]))
    futures = {
        client.submit(predict_slab, model_path, source, out_path, start, stop, settings, pure=False): i
        for i, (start, stop) in enumerate(parts)
    }
    largest = [0] * len(parts)
    for future in as_completed(futures):
        largest[futures[future]] = future.result()
        start, stop = parts[futures[future]]
        advance(stop - start)
    if not get_output(output).objects:
        return
    lookups = volume_ids(out_array, parts, largest, options["link_slices"])
    relabels = [
        client.submit(relabel_slab, out_path, s, e, lookup, pure=False) for (s, e), lookup in zip(parts, lookups)
    ]
    client.gather(relabels)
