"""What the cluster's slab tasks share, 2D or 3D: the plan every task is given, what a task returns,
how the slabs are cut, how a task learns that another failed, how the caller gathers the outcomes,
and the last pass that gives a slab's objects their ids in the whole volume."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..models.normalisation import Normalisation
from ..prediction.settings import PredictionSettings

SLABS_PER_WORKER = 4  # enough tasks to balance the load, few enough that each has work
STOP_WAIT_S = 120.0  # after a failure, at most this long for the tasks to stop writing


@dataclass(frozen=True)
class SlabPlan:
    """What every slab task is given: the settings, and what was settled for the whole volume
    (the scale factor, and the volume's own normalisation under the per-image rule); ``dims``, the
    model's (3: slabs of a 3D network, see ``scale.volumes``), and for a 3D model's objects
    ``object_halo``, how many slices past its slab a task reads to find them, and ``factors``, the
    (z, y, x) factors the volume is scaled by to the model's voxel size (``prediction.rescale``;
    each task scales the slices its slab needs)."""

    settings: PredictionSettings
    factor: float
    normalisation: Normalisation | None
    dims: int = 2
    object_halo: int = 0
    factors: tuple[float, ...] = (1.0, 1.0, 1.0)


def task_inputs(model_path: str, source: str, plan: SlabPlan) -> tuple[Any, Any]:
    """What a slab task reads first: the model (a file or a shipped model's name), with the volume's
    normalisation the plan settled, and the image (lazily; the caller checked the store's chunks)."""
    from dataclasses import replace

    from ..io import read_image
    from ..io.pretrained import load_model_or_pretrained

    model = load_model_or_pretrained(model_path)
    if plan.normalisation is not None:
        model = replace(model, normalisation=plan.normalisation)
    image, _ = read_image(source, check_chunks=False)
    return model, image


@dataclass(frozen=True)
class SlabOutcome:
    """What a task returns: the largest id it wrote, or the engine's one line when its input was
    bad, or that it stopped because another task failed."""

    largest: int = 0
    error: str | None = None
    stopped: bool = False


def slabs(n_slices: int, workers: int, multiple: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of consecutive slabs covering ``n_slices``, each (but the last) a multiple of
    ``multiple`` slices deep."""
    size = max(1, math.ceil(n_slices / (SLABS_PER_WORKER * max(1, workers))))
    size = -(-size // multiple) * multiple
    return [(start, min(n_slices, start + size)) for start in range(0, n_slices, size)]


def halted(halt: str | None) -> bool:
    """Whether the ``distributed.Event`` named ``halt`` is set (another task failed)."""
    if halt is None:
        return False
    from distributed import Event

    return bool(Event(halt).is_set())


def relabel_slab(out_path: str, start: int, stop: int, lookup: np.ndarray, halt: str | None = None) -> SlabOutcome:
    """One task: give a slab's objects their ids in the whole volume."""
    from ..io.omezarr import open_for_writing

    out = open_for_writing(out_path)
    for index in range(start, stop):
        if halted(halt):
            return SlabOutcome(stopped=True)
        out[index] = lookup[np.asarray(out[index])]
    return SlabOutcome()


def collect(futures: list[Any], halt: Any, each: Callable[[int, SlabOutcome], None]) -> None:
    """Hand each task's outcome to ``each(its index, outcome)`` as it finishes; a bad input is raised
    as ``InputError``. On any failure (or an interruption) every task is told to stop (``halt``) and
    waited for, so that none still writes when the caller removes the output."""
    from distributed import as_completed, wait

    index = {future.key: i for i, future in enumerate(futures)}
    try:
        for future in as_completed(futures):
            outcome = future.result()
            if outcome.error is not None:
                raise InputError(outcome.error)
            each(index[future.key], outcome)
    except BaseException:
        with contextlib.suppress(Exception):
            halt.set()
            wait(futures, timeout=STOP_WAIT_S)
        raise


def relabel(client: Any, out_path: str, parts: list[tuple[int, int]], lookups: list[np.ndarray], halt: Any) -> None:
    """Give every slab's objects their ids in the volume (``lookups``: per slab, from its ids to the volume's)."""
    tasks = [(relabel_slab, out_path, s, e, lookup, halt.name) for (s, e), lookup in zip(parts, lookups)]
    collect([client.submit(*task, pure=False) for task in tasks], halt, lambda i, outcome: None)
