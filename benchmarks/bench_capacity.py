"""Network capacity per device: EM quality after the same training time for several widths, patch
and batch sizes.

Trains napari-pix2pix's U-Net on the real EM stack (slices 0–14) for ``--minutes`` with each
``WIDTHxPATCHxBATCH`` configuration, on ``--device``, and scores slices 15–19 with the metrics of
``bench_quality.py``. The defaults of ``TrainingConfig`` (width 16, 128² patches, batch 4) were
chosen on two CPU cores; this script is how the GPU's are chosen.
"""

from __future__ import annotations

import json
import time

import common
import torch

from bench_quality import em_dataset, score_all
from napari_pix2pix.prediction import predict
from napari_pix2pix.training import TrainingConfig, fit


def run(dataset: dict, device: str, minutes: float, width: int, patch: int, batch: int, seed: int) -> dict:
    image, labels = dataset["train"]
    config = TrainingConfig(
        max_minutes=minutes, seed=seed, device=device, width=width, patch_size=patch, batch_size=batch
    )
    start = time.perf_counter()
    model = fit(image, labels, config)
    seconds = time.perf_counter() - start
    steps = model.history[-1]["step"]
    (metrics,) = score_all(lambda x: predict(model, x, device=device), dataset).values()
    return {"width": width, "patch": patch, "batch": batch, "seed": seed, "steps": steps, "train s": seconds, **metrics}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--configs", nargs="+", default=["16x128x4", "32x256x8", "64x256x8"], help="WIDTHxPATCHxBATCH")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    dataset = em_dataset()
    rows = []
    for config in args.configs:
        width, patch, batch = (int(v) for v in config.split("x"))
        for seed in args.seeds:
            rows.append(run(dataset, args.device, args.minutes, width, patch, batch, seed))
            print(json.dumps(rows[-1]), flush=True)
    notes = f"EM, train slices 0–14 for {args.minutes:g} min, score 15–19. {common.machine(torch.device(args.device))}."
    common.report(args, "bench_capacity.py", f"Capacity ({args.device})", notes + "\n\n" + common.markdown_table(rows))


if __name__ == "__main__":
    main()
