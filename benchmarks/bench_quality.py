"""Quality at equal time: the engine's U-Net and pix2pix against a random-forest pixel classifier.

Each method learns from the same annotations on the CPU and is scored on held-out data it never
saw, as a function of its training time (a time-to-quality curve):

* nuclei: real DSB2018 fluorescence nuclei with hand-drawn instance labels, 4 tiles of 256²;
  trained on 3 tiles, scored on the 4th (the engine holds one training tile out for validation).
* membranes: the synthetic EM-like stack (8 × 256² for training, another seed's 4 × 256² for scoring).

The random forest is the classic ilastik / APOC recipe: scikit-image ``multiscale_basic_features``
and scikit-learn ``RandomForestClassifier`` (100 trees), trained on growing random samples of the
annotated pixels, on the same class targets as the networks (for nuclei: background, interior,
boundary) and turned into labels and instances by the same code. Its time includes computing the
features. Network time is the engine's training time; scoring pauses are not counted.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import common
import numpy as np
import tifffile
import torch
from skimage.measure import label as connected_regions
from skimage.metrics import adapted_rand_error

from napari_pix2pix import training
from napari_pix2pix.data import Normalisation, as_channels_last
from napari_pix2pix.encodings import InstanceEncoding, make_encoding
from napari_pix2pix.models import ModelConfig
from napari_pix2pix.postprocess import instances_from_probabilities
from napari_pix2pix.prediction import iter_probabilities
from napari_pix2pix.synthetic import membrane_volume
from napari_pix2pix.trained_model import TrainedModel

NUCLEI = common.SHARED_DATA / "nuclei-dsb2018"
METRICS = ("pixel accuracy", "Dice", "adapted Rand error", "F1 @ IoU 0.5")


# ----------------------------------------------------------------------------- data sets


def nuclei() -> dict:
    """DSB2018 nuclei tiles: train on three, score on the fourth (instances)."""
    if (NUCLEI / "image.tif").exists():
        image, labels = tifffile.imread(NUCLEI / "image.tif"), tifffile.imread(NUCLEI / "labels.tif")
    else:
        from napari_pix2pix.samples import nuclei_stack

        image, labels = nuclei_stack()
    return {
        "name": "nuclei (DSB2018)",
        "train": (image[:3], labels[:3]),
        "test_image": image[3:],
        "test_objects": labels[3:].astype(np.int64),
        "objects_are": "nuclei",
    }


def membranes() -> dict:
    """Synthetic EM membranes: cells are the regions the membranes enclose."""
    image, membrane, _ = membrane_volume((8, 256, 256), seed=0)
    test_image, test_membrane, test_cells = membrane_volume((4, 256, 256), seed=1)
    return {
        "name": "membranes (synthetic EM)",
        "train": (image, membrane),
        "test_image": test_image,
        "test_objects": test_cells.astype(np.int64),
        "test_classes": test_membrane,
        "objects_are": "cells",
    }


# ----------------------------------------------------------------------------- scoring


def score(probabilities: np.ndarray, dataset: dict, model_like: TrainedModel) -> dict:
    """Metrics of (Z, K, H, W) class probabilities on the held-out slices."""
    predicted = np.stack([model_like.encoding.labels_on_host(p) for p in probabilities])
    truth_objects = dataset["test_objects"]
    if isinstance(model_like.encoding, InstanceEncoding):
        truth = truth_objects > 0
        objects = np.stack([instances_from_probabilities(p) for p in probabilities])
        foreground = predicted > 0
    else:  # membranes: class 1 is membrane; objects are the connected regions between membranes
        truth = dataset["test_classes"] > 0
        foreground = predicted == 1
        objects = np.stack([connected_regions(~plane, connectivity=1) for plane in foreground])
    return {
        "pixel accuracy": float((foreground == truth).mean()),
        "Dice": float(2 * (foreground & truth).sum() / (foreground.sum() + truth.sum())),
        "adapted Rand error": float(np.mean([adapted_rand_error(t, o)[0] for t, o in zip(truth_objects, objects)])),
        "F1 @ IoU 0.5": matched_f1(truth_objects, objects),
    }


def matched_f1(truth: np.ndarray, predicted: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of objects matched one-to-one at IoU > ``threshold`` (such matches are unique), over slices."""
    matched = n_true = n_predicted = 0
    for t, p in zip(truth, predicted):
        pairs, overlap = np.unique(np.stack([t.ravel(), p.ravel()]), axis=1, return_counts=True)
        true_ids, true_sizes = np.unique(t[t > 0], return_counts=True)
        pred_ids, pred_sizes = np.unique(p[p > 0], return_counts=True)
        keep = (pairs[0] > 0) & (pairs[1] > 0)
        size_t = dict(zip(true_ids, true_sizes))
        size_p = dict(zip(pred_ids, pred_sizes))
        iou = [o / (size_t[a] + size_p[b] - o) for (a, b), o in zip(pairs[:, keep].T, overlap[keep])]
        matched += int(np.sum(np.asarray(iou) > threshold))
        n_true, n_predicted = n_true + len(true_ids), n_predicted + len(pred_ids)
    return 2 * matched / max(1, n_true + n_predicted)


# ----------------------------------------------------------------------------- the engine


def network_curve(architecture: str, dataset: dict, budget: float, checkpoints: int) -> list[dict]:
    """Train with the engine's defaults for ``budget`` seconds, scoring the network at checkpoints."""
    image, labels = dataset["train"]
    config = training.TrainingConfig(model=architecture, device="cpu", max_minutes=None, epochs=10**6, seed=0)
    stop = threading.Event()
    trainer = training.Trainer(image, labels, config, stop=stop)
    events = trainer.run()
    like = _model_like(architecture, image, labels)
    curve, clock, next_checkpoint = [], 0.0, budget / checkpoints
    while True:
        start = time.perf_counter()
        try:
            event = next(events)
        except StopIteration as done:
            clock += time.perf_counter() - start
            like.network = done.value.network
            curve.append({"seconds": clock, **score(_probabilities(like, dataset), dataset, like)})
            return curve
        clock += time.perf_counter() - start
        if event.kind == training.EventKind.STEP and clock >= next_checkpoint and clock < budget:
            like.network = copy.deepcopy(trainer.model.network).eval()  # the live network, scored on a copy
            curve.append({"seconds": clock, **score(_probabilities(like, dataset), dataset, like)})
            next_checkpoint += budget / checkpoints
        if clock >= budget:
            stop.set()


def _model_like(architecture: str, image, labels) -> TrainedModel:
    """A ``TrainedModel`` shell with the encoding and normalisation the engine derives from the data."""
    encoding = make_encoding(np.asarray(labels).astype(np.int64), "auto")
    normalisation = Normalisation.fit(as_channels_last(image, labels_shape=labels.shape))
    config = training.TrainingConfig(model=architecture)
    model_config = ModelConfig(architecture, 1, encoding.n_classes, config.width, config.depth)
    return TrainedModel(model_config, None, encoding, normalisation, config.patch)


def _probabilities(model: TrainedModel, dataset: dict) -> np.ndarray:
    return np.stack([p for _, p in iter_probabilities(model, dataset["test_image"], device="cpu")])


# ----------------------------------------------------------------------------- random forest


def features(image: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """(Z, H, W, F) multiscale intensity, edge and texture features of each slice."""
    from skimage.feature import multiscale_basic_features

    scaled = normalisation.apply(image[..., None])[..., 0]
    return np.stack([multiscale_basic_features(plane, sigma_min=1, sigma_max=16) for plane in scaled])


def forest_curve(dataset: dict, budget: float, jobs: int) -> list[dict]:
    """Random forests on growing pixel samples; each point's time is features + fitting."""
    from sklearn.ensemble import RandomForestClassifier

    image, labels = dataset["train"]
    like = _model_like("unet", image, labels)
    start = time.perf_counter()
    train_features = features(image, like.normalisation)
    feature_seconds = time.perf_counter() - start
    targets = like.encoding.encode(np.asarray(labels).astype(np.int64)).ravel()
    flat = train_features.reshape(-1, train_features.shape[-1])
    annotated = np.flatnonzero(targets >= 0)
    test_features = features(dataset["test_image"], like.normalisation)
    rng = np.random.default_rng(0)
    curve, size = [], 2000
    while True:
        picks = rng.choice(annotated, min(size, len(annotated)), replace=False)
        forest = RandomForestClassifier(n_estimators=100, n_jobs=jobs, random_state=0)
        start = time.perf_counter()
        forest.fit(flat[picks], targets[picks])
        seconds = feature_seconds + time.perf_counter() - start
        probabilities = forest.predict_proba(test_features.reshape(-1, flat.shape[1]))
        full = np.zeros((probabilities.shape[0], like.encoding.n_classes), np.float32)
        full[:, forest.classes_] = probabilities
        full = np.moveaxis(full.reshape(*test_features.shape[:3], -1), -1, 1)
        curve.append({"seconds": seconds, "pixels": len(picks), **score(full, dataset, like)})
        print("  forest", curve[-1], flush=True)
        if size >= len(annotated) or seconds > budget / 4:
            return curve
        size *= 4


# ----------------------------------------------------------------------------- report


def plot(results: dict, path: Path) -> None:
    """Metric against training seconds, one row per data set, one column per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), len(METRICS), figsize=(4 * len(METRICS), 3.2 * len(results)), squeeze=False)
    for row, (dataset, curves) in enumerate(results.items()):
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            for method, curve in curves.items():
                ax.plot([p["seconds"] for p in curve], [p[metric] for p in curve], marker="o", label=method)
            ax.set_title(f"{dataset}: {metric}", fontsize=9)
            ax.set_xlabel("training seconds (2 CPU cores)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--minutes", type=float, default=3.0, help="training budget per method (default 3; the issue's goal is 10)"
    )
    p.add_argument("--checkpoints", type=int, default=6, help="scored points per network curve (default 6)")
    p.add_argument("--datasets", nargs="+", default=["nuclei", "membranes"], choices=["nuclei", "membranes"])
    p.add_argument("--methods", nargs="+", default=["unet", "pix2pix", "random forest"])
    p.add_argument("--plot", type=Path, help="curves PNG (default: docs/benchmarks_quality_<minutes>min.png)")
    args = p.parse_args()
    args.plot = args.plot or common.REPO / "docs" / f"benchmarks_quality_{args.minutes:g}min.png"
    torch.set_num_threads(2)
    budget = args.minutes * 60
    results, rows = {}, []
    for name in args.datasets:
        dataset = {"nuclei": nuclei, "membranes": membranes}[name]()
        curves = results.setdefault(dataset["name"], {})
        for method in args.methods:
            print(f"{dataset['name']}: {method}", flush=True)
            curves[method] = (
                forest_curve(dataset, budget, jobs=2)
                if method == "random forest"
                else network_curve(method, dataset, budget, args.checkpoints)
            )
            final = curves[method][-1]
            rows.append(
                {
                    "data": dataset["name"],
                    "method": method,
                    "training s": final["seconds"],
                    **{m: final[m] for m in METRICS},
                }
            )
            print(rows[-1], flush=True)
    if not args.no_doc:
        plot(results, args.plot)
    notes = (
        f"Machine: {common.machine_cpu()}. Budget: {args.minutes:g} minutes of "
        "training per method (`--minutes`); the last point of each curve is shown (for the networks: the "
        "weights the engine returns, i.e. the best by its validation Dice). Adapted Rand error: lower is "
        f"better; the others: higher is better. Curves: `{args.plot.relative_to(common.REPO)}`."
    )
    common.report(
        args,
        "bench_quality.py",
        f"Quality at equal time ({args.minutes:g} min per method)",
        notes + "\n\n" + common.markdown_table(rows) + f"\n\n![time to quality]({args.plot.name})",
        label=f"{args.minutes:g}min",
    )


if __name__ == "__main__":
    main()
