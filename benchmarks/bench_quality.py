"""Segmentation quality on real data: napari-pix2pix defaults, a plain PyTorch script and a random forest.

Each method gets the same CPU time to train (``--minutes``, the issue's 10 for EM and 5 for nuclei)
and is scored on held-out data with ``../shared/tools/score_segmentation.py``'s metrics: pixel
accuracy, Dice, adapted Rand error of the 4-connected foreground regions, and (nuclei) the F1 of
objects matched at IoU > 0.5. Several seeds show the noise.

- **EM membranes** (``../shared/data/em-membranes-isbi2012``): train on slices 0–14, score 15–19;
  foreground is the cell interior (label 255).
- **Nuclei on other images** (``--datasets nuclei-dev``, the headline): train on the shared 512²
  pair (``../shared/data/nuclei-dsb2018``), score each of the three images of
  ``../shared/data/nuclei-dev`` (other experiments, magnifications and brightness). Beside the
  methods trained from scratch: the starting model that ships with the plugin, as it is and
  fine-tuned 2 minutes on the same pair (``--start-from nuclei``).
- **Nuclei, tiles of one image** (``--datasets nuclei``): train on three 256² tiles, score the
  fourth, as it is and rescaled by 0.4×, 0.75× and 1.5× (another magnification).

napari-pix2pix runs as a user runs it: ``TrainingConfig(max_minutes=…, seed=…)`` and
``predict(model, image)`` with every other setting at its default (the CLI's defaults); the
"pix2pix" method is the same with ``model="pix2pix"``.
"""

from __future__ import annotations

import json
import sys
import time

import common
import numpy as np
import tifffile
import torch

import plain_unet
from napari_pix2pix.labels.postprocess import Cleanup
from napari_pix2pix.prediction import predict
from napari_pix2pix.training import TrainingConfig, fit

sys.path.insert(0, str(common.SHARED_DATA.parent / "tools"))
from score_segmentation import instance_f1, scores  # noqa: E402

METRICS = ("pixel_acc", "dice", "rand_err", "instance_f1")


def em_dataset() -> dict:
    folder = common.SHARED_DATA / "em-membranes-isbi2012"
    image, labels = tifffile.imread(folder / "volume.tif"), tifffile.imread(folder / "labels.tif")
    return {
        "name": "EM membranes (ISBI 2012)",
        "train": (image[:15], labels[:15]),
        "tests": {"slices 15-19": (image[15:], labels[15:])},
        "instances": False,
    }


def nuclei_dataset() -> dict:
    from skimage.transform import rescale

    folder = common.SHARED_DATA / "nuclei-dsb2018"
    image, labels = tifffile.imread(folder / "image.tif"), tifffile.imread(folder / "labels.tif")
    tests = {}
    for factor in (1.0, 0.4, 0.75, 1.5):
        scaled = rescale(image[3].astype(np.float32), factor, order=1, preserve_range=True, anti_aliasing=True)
        truth = rescale(labels[3], factor, order=0, preserve_range=True, anti_aliasing=False).astype(np.int64)
        tests[f"tile 4 at {factor:g}x"] = (scaled.astype(np.float32), truth)
    return {"name": "nuclei (DSB2018)", "train": (image[:3], labels[:3]), "tests": tests, "instances": True}


def nuclei_dev_dataset() -> dict:
    folder = common.SHARED_DATA / "nuclei-dsb2018"
    image, labels = tifffile.imread(folder / "img2d_512.tif"), tifffile.imread(folder / "mask2d_512.tif")
    tests = {}
    for sub in sorted((common.SHARED_DATA / "nuclei-dev").iterdir()):
        if sub.is_dir():
            tests[sub.name] = (tifffile.imread(sub / "image.tif"), tifffile.imread(sub / "labels.tif"))
    return {"name": "nuclei, other images (nuclei-dev)", "train": (image, labels), "tests": tests, "instances": True}


def score(predicted_labels: np.ndarray, truth: np.ndarray, instances: bool) -> dict:
    result = scores(predicted_labels > 0, truth > 0)
    if instances:
        result["instance_f1"] = instance_f1(predicted_labels, truth)
    return result


def score_all(predict_fn, dataset: dict) -> dict:
    """{test name: metrics} for ``predict_fn(image) -> labels``."""
    return {
        name: score(predict_fn(image), truth, dataset["instances"]) for name, (image, truth) in dataset["tests"].items()
    }


def engine(dataset: dict, minutes: float, seed: int, architecture: str = "unet") -> dict:
    image, labels = dataset["train"]
    start = time.perf_counter()
    model = fit(image, labels, TrainingConfig(model=architecture, max_minutes=minutes, seed=seed, device="cpu"))
    seconds = time.perf_counter() - start
    output = model.encoding.default_output
    start = time.perf_counter()
    result = score_all(lambda x: predict(model, x, output, device="cpu"), dataset)
    predict_s = time.perf_counter() - start
    # The same model without the automatic object-size rescaling and the watershed lines (issue 20:
    # the defaults may cost at most 1.3x this, and rescaling must lose nothing).
    bare = Cleanup(separate=False)
    start = time.perf_counter()
    plain_result = score_all(lambda x: predict(model, x, output, device="cpu", object_size=None, cleanup=bare), dataset)
    bare_s = time.perf_counter() - start
    return {
        "train s": seconds,
        "predict s": predict_s,
        "predict s, --object-size none --no-separate": bare_s,
        "time ratio to --object-size none --no-separate": predict_s / bare_s,
        "epochs": len(model.history),
        **result,
        **{f"{name} (--object-size none --no-separate)": metrics for name, metrics in plain_result.items()},
    }


#: The starting model the nuclei methods use: the shipped one, or a model file (``--starting-model``).
STARTING_MODEL = "nuclei"


def load_starting_model():
    from napari_pix2pix.io.pretrained import load_model_or_pretrained

    return load_model_or_pretrained(STARTING_MODEL)


def starting_model(dataset: dict, minutes: float, seed: int) -> dict:
    """The shipped nuclei model as it is (no training; the seed changes nothing)."""
    model = load_starting_model()
    start = time.perf_counter()
    result = score_all(lambda x: predict(model, x, "instances", device="cpu"), dataset)
    return {"train s": 0.0, "predict s": time.perf_counter() - start, **result}


def fine_tuned(dataset: dict, minutes: float, seed: int) -> dict:
    """The shipped nuclei model fine-tuned 2 minutes on the training pair (``--start-from nuclei``)."""
    image, labels = dataset["train"]
    start = time.perf_counter()
    model = fit(image, labels, TrainingConfig(max_minutes=2, seed=seed, device="cpu"), start_from=load_starting_model())
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = score_all(lambda x: predict(model, x, "instances", device="cpu"), dataset)
    return {"train s": seconds, "predict s": time.perf_counter() - start, **result}


def plain(dataset: dict, minutes: float, seed: int) -> dict:
    from skimage.measure import label

    image, labels = dataset["train"]
    targets = (np.asarray(labels) > 0).astype(np.int64)  # what a plain script does: foreground vs background
    start = time.perf_counter()
    model = plain_unet.train(np.asarray(image, np.float32), targets, minutes * 60, seed=seed)
    seconds = time.perf_counter() - start

    def predict_fn(x):
        stack = x if x.ndim == 3 else x[None]
        foreground = plain_unet.predict(model, stack.astype(np.float32)).argmax(1) > 0
        result = np.stack([label(f, connectivity=1) for f in foreground]) if dataset["instances"] else foreground
        return result if x.ndim == 3 else result[0]

    start = time.perf_counter()
    result = score_all(predict_fn, dataset)
    return {"train s": seconds, "predict s": time.perf_counter() - start, **result}


def forest(dataset: dict, minutes: float, seed: int) -> dict:
    """Random forest on scikit-image's multiscale features, fitted on 200,000 random training pixels
    (fitting takes a small part of the networks' time)."""
    from skimage.feature import multiscale_basic_features
    from skimage.measure import label
    from sklearn.ensemble import RandomForestClassifier

    def features(stack):
        stack = stack if stack.ndim == 3 else stack[None]
        low, high = np.percentile(stack, [1, 99.8])
        scaled = (stack.astype(np.float32) - low) / max(high - low, 1e-6)
        return np.stack([multiscale_basic_features(plane, sigma_min=1, sigma_max=16) for plane in scaled])

    image, labels = dataset["train"]
    start = time.perf_counter()
    train_features = features(image)
    flat = train_features.reshape(-1, train_features.shape[-1])
    targets = (np.asarray(labels) > 0).ravel()
    picks = np.random.default_rng(seed).choice(len(targets), min(len(targets), 200_000), replace=False)
    model = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed, max_samples=0.5)
    model.fit(flat[picks], targets[picks])
    seconds = time.perf_counter() - start

    def predict_fn(x):
        f = features(x)
        foreground = model.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:3])
        result = np.stack([label(p, connectivity=1) for p in foreground]) if dataset["instances"] else foreground
        return result if x.ndim == 3 else result[0]

    start = time.perf_counter()
    result = score_all(predict_fn, dataset)
    return {"train s": seconds, "predict s": time.perf_counter() - start, **result}


def pix2pix(dataset: dict, minutes: float, seed: int) -> dict:
    """The same, with ``--model pix2pix`` (its other settings at their defaults)."""
    return engine(dataset, minutes, seed, architecture="pix2pix")


METHODS = {
    "napari-pix2pix defaults": engine,
    "napari-pix2pix pix2pix": pix2pix,
    "plain PyTorch script": plain,
    "random forest": forest,
    "starting model (nuclei), as is": starting_model,
    "starting model, fine-tuned 2 min": fine_tuned,
}
DATASETS = {"em": em_dataset, "nuclei": nuclei_dataset, "nuclei-dev": nuclei_dev_dataset}


def summary_rows(runs: list[dict]) -> list[dict]:
    """Mean ± spread (max − min) over seeds, per data set, test and method."""
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        for test, metrics in run["tests"].items():
            key = (run["data"], test, run["method"], run["minutes"])
            ratio = run.get("time ratio to --object-size none --no-separate")
            groups.setdefault(key, []).append({**metrics, "train s": run["train s"], "predict ×": ratio})
    for (data, test, method, _), results in groups.items():
        row = {"data": data, "test": test, "method": method, "seeds": len(results)}
        for metric in ("train s", *METRICS, "predict ×"):
            values = [r[metric] for r in results if r.get(metric) is not None]
            if values:
                digits = {"train s": 0, "predict ×": 2}.get(metric, 4)
                mean, spread = np.mean(values), np.ptp(values) / 2
                row[metric] = f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
        rows.append(row)
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["em", "nuclei-dev"], choices=list(DATASETS))
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 5], help="training minutes per data set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    # The starting model is for nuclei: it is not run on EM.
    p.add_argument("--log", default="quality_runs.jsonl", help="one JSON line per run, appended (default: %(default)s)")
    p.add_argument("--from-log", action="store_true", help="only summarise the runs already in --log")
    p.add_argument(
        "--starting-model", default="nuclei", help="model file for the starting-model methods (default: shipped)"
    )
    args = p.parse_args()
    global STARTING_MODEL
    STARTING_MODEL = args.starting_model
    torch.set_num_threads(2)
    if args.from_log:
        with open(args.log) as log:
            runs = [json.loads(line) for line in log if line.strip()]
        report(args, runs)
        return
    runs = []
    for name, minutes in zip(args.datasets, args.minutes):
        dataset = DATASETS[name]()
        for seed in args.seeds:
            for method in args.methods:
                if METHODS[method] in (starting_model, fine_tuned) and not dataset["instances"]:
                    continue
                result = METHODS[method](dataset, minutes, seed)
                tests = {k: v for k, v in result.items() if isinstance(v, dict)}
                run = {
                    "data": dataset["name"],
                    "method": method,
                    "seed": seed,
                    "minutes": minutes,
                    "tests": tests,
                    **{k: v for k, v in result.items() if not isinstance(v, dict)},
                }
                runs.append(run)
                print(json.dumps(run), flush=True)
                with open(args.log, "a") as log:
                    log.write(json.dumps(run) + "\n")
    report(args, runs)


def report(args, runs: list[dict]) -> None:
    minutes = {run["data"]: run["minutes"] for run in runs}
    seeds = sorted({run["seed"] for run in runs})
    notes = (
        f"Training minutes: {minutes}; seeds {seeds}; mean ± half the range over seeds. "
        + common.machine(torch.device("cpu"))
        + "."
    )
    table = common.markdown_table(summary_rows(runs))
    common.report(args, "bench_quality.py", "Quality on real data", notes + "\n\n" + table)


if __name__ == "__main__":
    main()
