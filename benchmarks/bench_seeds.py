"""Touching nuclei: how instance seeds are found, scored on nuclei the models never saw.

The instance encoding predicts background, interior and boundary; a watershed grows one seed per
object over the foreground. Two ways to find the seeds are compared on the same probabilities:

- ``connected interiors`` (``dynamic=0``): every connected region of interior > 0.5 is one seed, so
  two nuclei whose interiors meet through a neck the network calls interior are one object;
- ``h-maxima`` (the default, ``SEED_DYNAMIC`` / ``SEED_SMOOTHING`` in ``labels/postprocess.py``):
  a seed is a peak of the interior probability (smoothed 1 px in the plane) standing at least
  ``h`` above the saddle to a higher one.

Models: the shipped starting model (``nuclei``) on ``../shared/data/nuclei-dev`` (three DSB2018
images of other experiments) and on the shipped sample's two tiles; any model files given with
``--models`` (2D or 3D) on the same images, or, for 3D models, on slices 50–99 of
``../shared/data/nuclei-3d-ovules``. The network runs once per image; only the seeds change.

    .venv/bin/python benchmarks/bench_seeds.py
    .venv/bin/python benchmarks/bench_seeds.py --models nuclei my-3d-model.pt --dynamics 0 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import functools
import importlib.util

import common
import numpy as np
import tifffile

SCORER = common.REPO.parent / "shared" / "tools" / "score_segmentation.py"


@functools.cache
def scorer():
    """The shared scoring script, loaded once."""
    spec = importlib.util.spec_from_file_location("score_segmentation", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instance_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(scorer().instance_f1(predicted, truth))


def images_2d() -> list[tuple[str, np.ndarray, np.ndarray]]:
    found = []
    for sub in sorted((common.SHARED_DATA / "nuclei-dev").iterdir()):
        if sub.is_dir():
            found.append((sub.name, tifffile.imread(sub / "image.tif"), tifffile.imread(sub / "labels.tif")))
    sample = common.REPO / "src" / "napari_pix2pix" / "sample_data"
    image, labels = tifffile.imread(sample / "nuclei_image.tif"), tifffile.imread(sample / "nuclei_labels.tif")
    found += [(f"sample tile {i}", image[i], labels[i]) for i in range(len(image))]
    return found


def volume_3d() -> list[tuple[str, np.ndarray, np.ndarray]]:
    folder = common.SHARED_DATA / "nuclei-3d-ovules"
    image, labels = tifffile.imread(folder / "image.tif"), tifffile.imread(folder / "labels.tif")
    return [("ovule nuclei, slices 50-99", image[50:], labels[50:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["nuclei"], help="'nuclei' (shipped) or model files")
    p.add_argument("--dynamics", type=float, nargs="+", default=[0.0, 0.1, 0.2], help="h; 0: connected interiors")
    args = p.parse_args()
    from napari_pix2pix import predict
    from napari_pix2pix.io.pretrained import load_model_or_pretrained
    from napari_pix2pix.labels.outputs import CLASS_PROBABILITIES
    from napari_pix2pix.labels.postprocess import instances_from_probabilities

    for name in args.models:
        model = load_model_or_pretrained(name)
        images = volume_3d() if model.config.dims == 3 else images_2d()
        scores: dict[float, list[float]] = {h: [] for h in args.dynamics}
        for _, image, truth in images:
            probabilities = np.asarray(predict(model, image, CLASS_PROBABILITIES, device="cpu"), np.float32)
            if probabilities.ndim == 4:  # (Z, K, Y, X) → (K, Z, Y, X)
                probabilities = np.moveaxis(probabilities, 1, 0)
            for h in args.dynamics:
                scores[h].append(instance_f1(instances_from_probabilities(probabilities, dynamic=h), truth))
        print(f"\n{name}: object F1 @ IoU 0.5 per image ({', '.join(n for n, _, _ in images)})")
        for h, values in scores.items():
            how = "connected interiors" if h == 0 else f"h-maxima, h = {h:g}"
            dev = [v for (n, _, _), v in zip(images, values) if not n.startswith("sample")]
            tiles = [v for (n, _, _), v in zip(images, values) if n.startswith("sample")]
            each = " / ".join(f"{v:.3f}" for v in values)
            means = f"mean of the others {np.mean(dev):.3f}"
            if tiles:
                means += f", of the sample {np.mean(tiles):.3f}"
            print(f"  {how:24s} {each}   {means}")


if __name__ == "__main__":
    main()
