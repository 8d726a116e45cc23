"""Shared helpers of the benchmark scripts: machine label, timing, matmul ceiling, report writing.

Every script prints a Markdown table and writes it into its own marked section of
``docs/benchmarks.md`` (``<!-- name:start -->`` … ``<!-- name:end -->``), so the scripts can be run
one at a time, on different machines, without overwriting each other's figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
try:
    import napari_pix2pix  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

DOC = REPO / "docs" / "benchmarks.md"
SHARED_DATA = REPO.parent / "shared" / "data"  # the shared data beside the checkout, if any


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default: cpu)")
    p.add_argument("--doc", type=Path, default=DOC, help=f"Markdown file to update (default: {DOC.relative_to(REPO)})")
    p.add_argument("--no-doc", action="store_true", help="only print the table")
    return p


def machine(device: torch.device) -> str:
    """Which machine a figure was measured on, e.g. 'CPU: 2 cores (AMD EPYC)' or the GPU's name."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return (
        f"CPU: {torch.get_num_threads()} threads of {os.cpu_count()} cores ({_cpu_name()}), torch {torch.__version__}"
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps: int, device: torch.device) -> float:
    """Seconds per step of ``steps`` back-to-back calls of ``step`` (a bare training step, say)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Measured matrix-multiply rate in GFLOP/s (best of ``repeats``): the ceiling a convolutional
    network can approach."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.rand(size, size, device=device, dtype=dtype)
    b = torch.rand(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (floats to 3 significant digits)."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the ``name`` section of the Markdown file ``path``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def report(args, name: str, title: str, text: str, label: str = "") -> None:
    """Print a section and, unless ``--no-doc``, write it to the document (one section per script,
    device and ``label``)."""
    body = f"### {title}\n\n{text}\n\n_Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/{name}`._"
    print(body)
    if not args.no_doc:
        key = "-".join(filter(None, (Path(name).stem, args.device.split(":")[0], label)))
        write_section(args.doc, key, body)


def machine_cpu() -> str:
    """The CPU label, for benchmarks that only run on the CPU."""
    return machine(torch.device("cpu"))
