"""Train the starting model for nuclei that ships with the plugin (``napari_pix2pix/pretrained/nuclei.pt``).

Data: the 541 greyscale images of the DSB2018 stage-1 training set (CC0) with their instance labels, as
``../shared/data/nuclei-dsb2018-stage1/`` holds them (``images/*.tif``, ``labels/*.tif``). The three images
of ``../shared/data/nuclei-dev/`` and every picture overlapping them were left out of that set, so
``benchmarks/bench_quality.py --nuclei-dev`` measures this model on images it has not seen.

Recipe (the defaults of ``napari-pix2pix train`` except where said):
- every image is rescaled so that its nuclei are ``--diameter`` pixels across (their median equivalent
  diameter, measured on its labels; factors limited to 0.25–4×), so the network sees nuclei of one size
  (the model keeps no object size, though: see the measurement at the end of ``main``);
- cut into tiles of at most ``--tile`` pixels a side (so that images of very different sizes are not
  all padded to the largest);
- per-image intensity scaling (each image by its own 1st–99.8th percentiles), so that dim and bright
  experiments look alike to the network;
- instance labels: interior / boundary classes with the boundary weight map, a U-Net of width 16 and
  depth 4, 5 % of the tiles held out for the best-weights choice.

Usage (from the repository root, after ``bash scripts/setup.sh``)::

    .venv/bin/python scripts/train_nuclei_model.py --minutes 45
    .venv/bin/python scripts/train_nuclei_model.py --minutes 25 --resume src/napari_pix2pix/pretrained/nuclei.pt \
        --keep-from-resumed 0.2

(the shipped model: 45 minutes, then 25 more, on 2 CPU cores; its weights are 0.8 of the 70-minute
weights and 0.2 of the 45-minute ones, an average along the run, which predicted better on images
it had not seen: docs/benchmarks.md, Nuclei on images the model has not seen).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.transform import rescale

from napari_pix2pix.io.modelfile import load_model, save_model
from napari_pix2pix.labels.postprocess import typical_object_size
from napari_pix2pix.training import TrainingConfig, fit
from napari_pix2pix.training.steps import mix_weights

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "nuclei-dsb2018-stage1"
OUT = ROOT / "src" / "napari_pix2pix" / "pretrained" / "nuclei.pt"


def tiles(image: np.ndarray, labels: np.ndarray, side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping tiles of at most ``side`` a side covering the image (the last ones shifted in)."""

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = -(-length // side)
        return sorted({round(i * (length - side) / (count - 1)) for i in range(count)})

    return [
        (image[y : y + side, x : x + side], labels[y : y + side, x : x + side])
        for y in starts(image.shape[0])
        for x in starts(image.shape[1])
    ]


def load(diameter: float, side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stage-1 pairs, each rescaled to nuclei of ``diameter`` pixels and tiled."""
    pairs = []
    names = sorted(p.name for p in (DATA / "images").glob("*.tif"))
    if not names:
        sys.exit(f"no images in {DATA / 'images'}: this script needs the shared DSB2018 stage-1 set")
    for name in names:
        image = tifffile.imread(DATA / "images" / name).astype(np.float32)
        labels = tifffile.imread(DATA / "labels" / name).astype(np.int32)
        size = typical_object_size(labels)
        factor = float(np.clip(diameter / size, 0.25, 4.0)) if size else 1.0
        if abs(factor - 1) > 0.05:
            image = rescale(image, factor, order=1, preserve_range=True, anti_aliasing=factor < 1)
            labels = rescale(labels, factor, order=0, preserve_range=True, anti_aliasing=False)
        # A tile without nuclei carries no annotation (0 is "not annotated" for instance labels).
        pairs += [pair for pair in tiles(image.astype(np.float32), labels.astype(np.int32), side) if pair[1].any()]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0, help="training time (default: 40)")
    parser.add_argument("--diameter", type=float, default=20.0, help="nuclei size to train at, px (default: 20)")
    parser.add_argument("--tile", type=int, default=256, help="largest tile side (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resume", type=Path, help="continue this model for --minutes more (same tiles)")
    parser.add_argument(
        "--keep-from-resumed",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="with --resume: the model's weights keep this share of the resumed model's (default: 0)",
    )
    args = parser.parse_args()
    if args.keep_from_resumed and args.resume is None:
        parser.error("--keep-from-resumed mixes in the weights of the model given with --resume; give --resume too")
    if not 0 <= args.keep_from_resumed <= 1:
        parser.error(f"--keep-from-resumed is a share between 0 and 1, got {args.keep_from_resumed:g}")

    start = time.monotonic()
    pairs = load(args.diameter, args.tile)
    print(f"{len(pairs)} tiles from {DATA} in {time.monotonic() - start:.0f} s", flush=True)
    config = TrainingConfig(
        max_minutes=args.minutes,
        annotation="instances",
        normalisation="per-image",
        val_fraction=0.05,
        seed=args.seed,
        device="cpu",
    )
    last = [0.0]

    def report(event) -> None:  # one line a minute
        if time.monotonic() - last[0] > 60 or event.kind.name != "STEP":
            last[0] = time.monotonic()
            print(
                f"{event.elapsed / 60:5.1f} min  step {event.step}  loss {event.loss}  "
                f"validation Dice {event.val_dice}  {event.message}",
                flush=True,
            )

    resume = load_model(args.resume) if args.resume else None
    model = fit(pairs, config=config, callback=report, resume=resume)
    if resume is not None and args.keep_from_resumed:
        # An average of the weights along the run (Izmailov et al. 2018): kept 0.2 of the 45-minute
        # weights, chosen on the shipped sample's 512² image (in neither the training set nor
        # nuclei-dev), which scored 0.831-0.839 for shares 0.1-0.4 against 0.812 for none.
        mix_weights(model.network, resume.network.state_dict(), 1 - args.keep_from_resumed)
    # Measured on the three nuclei-dev images (other experiments): predicting each image at its own
    # scale scored object F1 0.771 in the mean, rescaling its nuclei to the 20 px the model trained at
    # 0.733 (the large dim nuclei, shrunk 0.4x, lose the thin gaps between them: 0.763 -> 0.647). So
    # the shipped model keeps no object size: images are predicted as they are (README, Quality).
    model = dataclasses.replace(model, object_size=None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); object size {model.object_size}")


if __name__ == "__main__":
    main()
