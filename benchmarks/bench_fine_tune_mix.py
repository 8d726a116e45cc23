"""How far a fine-tuned model should end from the starting model's weights (``FINE_TUNE_MIX``).

Each seed fine-tunes the shipped nuclei model twice for 2 minutes, with the weights left as the run
reached them: on the shared 512² pair (scored on the three images of ``nuclei-dev``, other
experiments) and on three 256² tiles of the sample (scored on the fourth, the user's own kind of
image). Then every share of the fine-tuned weights is scored: ``start + share · (reached − start)``
(WiSE-FT, Wortsman et al. 2022); share 0 is the starting model as it is, 1 the fine-tuned weights.

    python bench_fine_tune_mix.py --seeds 0 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np

import bench_quality as bq
from napari_pix2pix.prediction import predict
from napari_pix2pix.training import TrainingConfig, fit, loop
from napari_pix2pix.training.steps import copy_weights, mix_weights

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def object_f1(model, dataset: dict) -> dict[str, float]:
    scores = bq.score_all(lambda x: predict(model, x, "instances", device="cpu"), dataset)
    return {name: round(metrics["instance_f1"], 4) for name, metrics in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=2.0)
    args = parser.parse_args()
    other = bq.nuclei_dev_dataset()
    own = bq.nuclei_dataset()
    own["tests"] = {"tile 4": own["tests"]["tile 4 at 1x"]}
    start = bq.load_starting_model()
    start_weights = copy_weights(start.network)
    loop.FINE_TUNE_MIX = 1.0  # keep the weights each run reaches; the shares are mixed below
    rows = []
    for seed in args.seeds:
        config = TrainingConfig(max_minutes=args.minutes, seed=seed, device="cpu")
        pairs = {"other": other["train"], "own": own["train"]}
        reached = {name: fit(*pair, config, start_from=start) for name, pair in pairs.items()}
        for share in SHARES:
            mixed = {name: copy.deepcopy(model) for name, model in reached.items()}
            for model in mixed.values():
                mix_weights(model.network, start_weights, share)
            row = {"seed": seed, "share": share, **object_f1(mixed["other"], other), **object_f1(mixed["own"], own)}
            row["nuclei-dev mean"] = round(float(np.mean([row[name] for name in other["tests"]])), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| share of the fine-tuned weights | nuclei-dev, mean object F1 | the sample's fourth tile |")
    print("| --- | --- | --- |")
    for share in SHARES:
        chosen = [row for row in rows if row["share"] == share]
        dev = np.mean([row["nuclei-dev mean"] for row in chosen])
        tile = np.mean([row["tile 4"] for row in chosen])
        print(f"| {share:g} | {dev:.3f} | {tile:.3f} |")


if __name__ == "__main__":
    main()
