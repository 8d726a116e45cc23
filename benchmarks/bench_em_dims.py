"""Serial-section EM in 2D, 2.5D or 3D: which way of seeing the stack segments its cells best.

Data: ``../shared/data/em-membranes-isbi2012`` (ISBI 2012, ssTEM, 4 × 4 × 50 nm voxels). Each method
trains on slices 0–14 for ``--minutes`` (issue 19's 10) and is scored on slices 15–19 with
``../shared/tools/score_segmentation.py``'s metrics (pixel accuracy, Dice, adapted Rand error).

- ``2d``: the defaults (``TrainingConfig(max_minutes=…, seed=…)``), slice by slice;
- ``25d``: the same 2D U-Net given slices z−1, z and z+1 as three input channels (mirrored at the
  stack's ends), the "2.5D" of issue 19; built here from the arrays, not a mode of the plugin;
- ``3d``: the 3D U-Net (``dims="3d"``, voxel size 0.05 × 0.004 × 0.004 µm, so the first three
  levels pool and convolve in-plane only).

One JSON line per run, appended to ``--log``::

    .venv/bin/python benchmarks/bench_em_dims.py --methods 25d 2d 3d --seeds 0 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_quality import em_dataset, score
from napari_pix2pix import TrainingConfig, fit, predict

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("2d", "25d", "3d")


def with_neighbours(volume: np.ndarray) -> np.ndarray:
    """(Z, Y, X) → (Z, Y, X, 3): each slice with the one before and after it (mirrored at the ends)."""
    index = np.arange(len(volume))
    before = np.abs(index - 1)
    after = len(volume) - 1 - np.abs(len(volume) - 2 - index)
    return np.stack([volume[before], volume, volume[after]], axis=-1)


def run(method: str, seed: int, minutes: float) -> dict:
    dataset = em_dataset()
    image, labels = dataset["train"]
    ((test, truth),) = dataset["tests"].values()
    settings: dict = dict(max_minutes=minutes, seed=seed, device="cpu")
    if method == "3d":
        settings.update(dims="3d", voxel_size=(0.05, 0.004, 0.004))
    if method == "25d":
        image, test = with_neighbours(image), with_neighbours(test)
        settings.update(dims="2d")
    started = time.perf_counter()
    model = fit(image, labels, TrainingConfig(**settings))
    trained = time.perf_counter() - started
    started = time.perf_counter()
    found = predict(model, test, model.encoding.default_output, device="cpu")
    predicted = time.perf_counter() - started
    metrics = score(found, truth, False)
    return {
        "method": method,
        "seed": seed,
        "minutes": minutes,
        **{k: round(float(v), 4) for k, v in metrics.items()},
        "train_s": round(trained),
        "predict_s": round(predicted, 1),
        "epochs": len(model.history),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--log", type=Path, default=ROOT / "docs" / "em_dims_runs.jsonl")
    args = p.parse_args()
    for seed in args.seeds:
        for method in args.methods:
            row = run(method, seed, args.minutes)
            print(json.dumps(row), flush=True)
            with open(args.log, "a") as log:
                log.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
