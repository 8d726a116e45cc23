"""3D quality on real confocal nuclei: the 3D U-Net against the 2D defaults, fully and partly annotated.

Data: ``../shared/data/nuclei-3d-ovules`` (a 100³ crop of an Arabidopsis ovule, curated labels,
voxel 0.284 × 0.128 × 0.128 µm). The model trains on slices 0–49 and is scored on slices 50–99,
which it never saw (the volume this repository does not hold is scored by the issue's checkers).
Methods, each with the same time budget on the same machine:

- ``3d``: ``dims="3d"``, every training slice annotated;
- ``3d-5``: the same with only 5 of the 50 training slices annotated (the others 0, ignored);
- ``2d``: the 2D defaults (instances linked from slice to slice), every slice annotated;
- ``2d-5``: the 2D defaults with the same 5 slices.

Scores are the issue's: 3D object F1 at IoU 0.5 (objects matched in the whole volume), voxel accuracy
and Dice of the foreground (``../shared/tools/score_segmentation.py``). ``--contrast 0.8 1.25`` also
scores the held-out slices with their contrast scaled around the background level, as another crop
of the same kind may come (``instance_f1_contrast_0.8``, ...).

    .venv/bin/python benchmarks/bench_3d.py --minutes 5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nuclei-3d-ovules"
SCORER = ROOT.parent / "shared" / "tools" / "score_segmentation.py"
VOXEL = (0.2837, 0.1276, 0.1276)
METHODS = ("3d", "3d-5", "2d", "2d-5")


def scorer():
    spec = importlib.util.spec_from_file_location("score_segmentation", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def partial(labels: np.ndarray, count: int) -> np.ndarray:
    """Only ``count`` evenly spaced slices annotated; the others 0 (not annotated)."""
    keep = np.linspace(0, len(labels) - 1, count + 2).round().astype(int)[1:-1]
    sparse = np.zeros_like(labels)
    sparse[keep] = labels[keep]
    return sparse


def with_contrast(volume: np.ndarray, factor: float) -> np.ndarray:
    """The volume with its contrast scaled by ``factor`` around its background level (its median:
    most voxels are background), as another crop, stage or laser power would give it."""
    background = float(np.median(volume))
    return (background + (volume.astype(np.float32) - background) * factor).clip(0, None)


def run(
    method: str,
    seed: int,
    minutes: float,
    image: np.ndarray,
    labels: np.ndarray,
    save: Path | None,
    batch: int | None = None,
    learning_rate: float | None = None,
    depth: int | None = None,
    contrasts: tuple[float, ...] = (),
    binning: int | None = None,
    val_fraction: float | None = None,
) -> dict:
    from napari_pix2pix import TrainingConfig, fit, predict, save_model

    train_image, train_labels = image[:50], labels[:50]
    if method.endswith("-5"):
        train_labels = partial(train_labels, 5)
    dims = "3d" if method.startswith("3d") else "2d"
    config = TrainingConfig(
        dims=dims,
        max_minutes=minutes,
        seed=seed,
        annotation="instances",
        voxel_size=VOXEL,
        pixel_size=VOXEL[1:],
        binning=binning,
        batch_size=batch,
        learning_rate=learning_rate,
        **({"depth": depth} if depth is not None else {}),
        **({"val_fraction": val_fraction} if val_fraction is not None else {}),
    )
    started = time.monotonic()
    model = fit(train_image, train_labels, config)
    trained = time.monotonic() - started
    if save is not None:
        save_model(model, save / f"{method}-seed{seed}.pt")
    started = time.monotonic()
    predicted = predict(model, image[50:], "instances", voxel_size=VOXEL, pixel_size=VOXEL[1:])
    seconds = time.monotonic() - started
    score = scorer()
    result = score.scores(predicted > 0, labels[50:] > 0)
    result["instance_f1"] = score.instance_f1(predicted, labels[50:])
    for factor in contrasts:  # the same held-out slices, as if imaged brighter or dimmer
        other = predict(model, with_contrast(image[50:], factor), "instances", voxel_size=VOXEL, pixel_size=VOXEL[1:])
        result[f"instance_f1_contrast_{factor:g}"] = score.instance_f1(other, labels[50:])
    return {
        "method": method,
        "seed": seed,
        "minutes": minutes,
        **{k: round(v, 4) for k, v in result.items()},
        "epochs": len(model.history),
        "train_s": round(trained, 1),
        "predict_s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--log", type=Path, default=ROOT / "docs" / "quality_runs_3d.jsonl")
    parser.add_argument("--save", type=Path, default=None, help="folder to keep the trained models in")
    parser.add_argument("--variant", default="", help="what this run changes, written into the log")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: automatic)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the architecture's)")
    parser.add_argument("--depth", type=int, default=None, help="U-Net levels (default: TrainingConfig's)")
    parser.add_argument("--binning", type=int, default=None, help="3D in-plane binning (default: automatic)")
    parser.add_argument("--val-fraction", type=float, default=None, help="held-out share (default: TrainingConfig's)")
    parser.add_argument("--z-patch", type=int, default=None, help="the 3D patch's depth in slices (default: unet-3d's)")
    parser.add_argument(
        "--contrast",
        type=float,
        nargs="+",
        default=[],
        metavar="FACTOR",
        help="also score the held-out slices with their contrast scaled by each FACTOR (e.g. 0.8 1.25)",
    )
    args = parser.parse_args()
    if args.z_patch is not None:  # a measurement of another depth than the architecture's
        from napari_pix2pix.models.networks import get_architecture, register_architecture

        register_architecture(dataclasses.replace(get_architecture("unet-3d"), z_patch_size=args.z_patch))
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)  # made before training, not found missing after it
    image = tifffile.imread(DATA / "image.tif")
    labels = tifffile.imread(DATA / "labels.tif")
    for seed in args.seeds:
        for method in args.methods:
            options = (
                args.save,
                args.batch,
                args.lr,
                args.depth,
                tuple(args.contrast),
                args.binning,
                args.val_fraction,
            )
            result = run(method, seed, args.minutes, image, labels, *options)
            result.update(date=time.strftime("%Y-%m-%d"), **({"variant": args.variant} if args.variant else {}))
            print(json.dumps(result), flush=True)
            with args.log.open("a") as log:
                log.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
