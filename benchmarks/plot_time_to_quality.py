"""Time-to-quality plot: each method's held-out scores against the minutes it trained, from the JSON
lines ``bench_quality.py`` logs (one run per line), e.g.

    python bench_quality.py --datasets em --minutes 2.5 --seeds 0 --methods "napari-pix2pix defaults" \\
        "plain PyTorch script" --log ../docs/time_to_quality_runs.jsonl --no-doc
    python plot_time_to_quality.py ../docs/quality_runs.jsonl ../docs/time_to_quality_runs.jsonl

Points are the mean over seeds, bars the range. Writes ``docs/time_to_quality.png``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import common
import numpy as np

PANELS = (("pixel_acc", "pixel accuracy (higher is better)"), ("rand_err", "adapted Rand error (lower is better)"))


def load(paths: list[Path], data: str) -> dict[str, dict[float, list[dict]]]:
    """{method: {minutes: [scores of one run, ...]}} for the runs on ``data`` (its first test)."""
    runs: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for line in path.read_text().splitlines():
            run = json.loads(line) if line.strip() else None
            if run is None or run["data"] != data:
                continue
            # The forest trains in well under its budget: placed at the time it took (to 0.1 min).
            minutes = run["minutes"] if run["method"] != "random forest" else round(run["train s"] / 60, 1)
            runs[run["method"]][minutes].append(next(iter(run["tests"].values())))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--data", default="EM membranes (ISBI 2012)")
    parser.add_argument("--out", type=Path, default=common.REPO / "docs" / "time_to_quality.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load(args.logs, args.data)
    figure, axes = plt.subplots(1, len(PANELS), figsize=(10, 4))
    for axis, (metric, title) in zip(axes, PANELS):
        for method, by_minutes in sorted(runs.items()):
            minutes = sorted(by_minutes)
            values = [[run[metric] for run in by_minutes[m]] for m in minutes]
            mean = np.array([np.mean(v) for v in values])
            spread = np.array([[mean[i] - min(v), max(v) - mean[i]] for i, v in enumerate(values)]).T
            axis.errorbar(minutes, mean, yerr=spread, marker="o", capsize=3, label=method)
        axis.set_xlabel("training minutes (2 CPU cores)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"{args.data}: held-out scores against training time")
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
