"""3D engine overheads: training steps, blocked prediction and peak memory of the 3D U-Net, each set
against bare PyTorch (or, for memory, the volume's own size) measured in the same process.

Three parts, chosen with ``--parts`` (default: all three). Every measurement prints one JSON line
(and, with ``--log``, appends it to ``docs/engine_runs_3d.jsonl``) and a one-line summary. Only
ratios are reported, never timed assertions: a busy machine slows the engine and its baseline alike.

**training**: the engine's training loop (``training.loop.Trainer``, which ``train`` and ``fit``
run) with ``dims="3d"``, ``annotation="instances"``, voxel size 0.28 × 0.128 × 0.128 µm, ``seed=0``,
``max_minutes=None``, the default network and batch (4, given explicitly so the engine keeps it) on the
synthetic 3D nuclei sample (48 × 128 × 128), against a bare loop: a fresh copy of the network the
engine planned (its width, depth and ``z_skip``, checked against ``plan_z_skip`` of the voxel size),
Adam with the engine's rate and betas, and the engine's loss function (``segmentation_loss``:
cross-entropy plus soft Dice, so the ratio holds only the engine's overheads, not a cheaper loss) on
random tensors of the engine's batch and (z, y, x) patch (its sampler's, 16 × 64 × 64 here) made
once. Building the ``Trainer`` (checks, encoding, normalisation, network, plan) is timed on its own
("setup_s"); the first epoch is a warm-up and is not timed. Then the engine runs one epoch of
``--steps`` steps per round, timed from one 'epoch' event to the next (so it includes patch
sampling, augmentation, the learning-rate schedule and the epoch's bookkeeping), and the bare loop
runs as many steps; rounds alternate, so other work on the machine slows both alike, and the
median round is kept. Validation is off by default (``--val-fraction 0``: nothing held out, nothing
validated); with the default 0.2 the engine validates by design at most about a tenth of the
training time (``Trainer._validation_due``), which alone would cap the ratio near 0.9, so it is
measured apart: ``--val-fraction 0.2`` adds it to the rounds, and "engine_over_bare_all_rounds"
(total times rather than the median round) counts it. The issue's target: engine / bare ≥ 0.9.

**prediction**: ``napari_pix2pix.predict(model, volume, "labels")`` of a 3D U-Net with random
weights (speed does not depend on them; instance classes, the default width 16 and ``unet-3d``'s depth
(``--depth`` another), the voxel
size above, so the volume is not rescaled) on a random float32 volume (``--shape``, default
64 × 256 × 256), against the same network run over the very same blocks (``prediction.volume.block_plan``:
in-plane blocks of 128 + 2 × 16 halo, slabs of two z multiples + 2 × ``Z_HALO`` slices, mirrored at the volume's
edges, as many blocks per forward pass as the engine), cut once beforehand and kept in memory, under
``torch.inference_mode`` with nothing after the network but the argmax and the copy of each block's
centre into the output. Best of ``--predict-rounds`` interleaved repetitions. The ratio bare /
engine is the engine's speed as a fraction of the network's alone on its blocks (target ≥ 0.85);
the voxels the blocks feed the network per voxel of the volume (their halos) are shown beside it,
and the share of voxels whose labels agree with the bare pass's (a check that both did the same).

**memory**: a uint8 volume of ``--gigabytes`` (default 1.0; slices of ``--side`` × ``--side``,
default 2048, tiled from the 3D nuclei sample) is written slice by slice with tifffile to a
temporary folder, uncompressed and contiguous; the command line reads it a slab at a time
(``io.tiff.read_tiff(lazy=True)``: a Zarr array over its pages; the row's "memory_mapped", true when
the file is not read whole, confirms it).
A fresh process imports the command line, loads the model (a 3D U-Net of ``--width`` 4, ``unet-3d``'s depth,
random weights, saved with ``save_model``; small so the run stays short, memory being dominated by the
slabs rather than the network), notes its resident memory (the baseline), then runs
``napari_pix2pix.cli.main(["predict", MODEL, IN.tif, "--out", OUT.tif, "--output", "labels", ...])``
and reports its peak resident memory (``ru_maxrss``). Resident memory also counts file-backed pages:
the shared libraries' code the first passes touch and the pages of the memory-mapped input the process
has read (reclaimable by the kernel, but resident while memory is plentiful). So a thread samples
``RssAnon`` and ``RssFile`` from ``/proc/self/status`` every 20 ms, and both are given at the
baseline and at their peaks: the growth of anonymous memory is what the engine's arrays hold.
Children run with ``MALLOC_MMAP_THRESHOLD_=131072`` as in ``bench_memory.py`` (``--default-malloc``
turns it off). The peak grows with the slice's area (a slab of slices is held), not the depth.
The issue's target: peak ≤ 2 GB for a 1 GB volume. ``--output instances`` measures what 3D instances
cost: they are found by a watershed over class probabilities kept as float16 (Z, 3, Y, X), with
its float32 elevation, markers, masks and output besides (the float64 copies skimage makes of the
elevation among them): about ``INSTANCE_BYTES`` (37) bytes per voxel. A volume of up to
``objects3d.SLAB_VOXELS`` voxels is done whole, a larger one a slab and its halos at a time
(``prediction/objects3d.py``), so the estimate stops growing there.
The part is skipped with a message when the estimate exceeds 80 % of the memory available.

Commands (from the repository root). On 2 CPU cores the full run takes about 35–70 minutes: training
3–5, prediction 3–5, and the 1 GB memory run 30–60 (the width-4 network predicts 0.3–0.6 million
voxels a second there, depending on what else runs)::

    nice -n 10 .venv/bin/python benchmarks/bench_3d_engine.py --log
    .venv/bin/python benchmarks/bench_3d_engine.py --parts training --steps 5 --rounds 4
    .venv/bin/python benchmarks/bench_3d_engine.py --parts training --val-fraction 0.2
    .venv/bin/python benchmarks/bench_3d_engine.py --parts prediction --shape 64 256 256
    .venv/bin/python benchmarks/bench_3d_engine.py --parts memory --gigabytes 1.0 --log
    .venv/bin/python benchmarks/bench_3d_engine.py --parts memory --gigabytes 0.1 --output instances
    .venv/bin/python benchmarks/bench_3d_engine.py --parts training prediction --device cuda

Quick checks that the script runs (under a minute each; a small ``--side`` keeps the memory part
short, since one slab of 2048² slices alone takes minutes)::

    .venv/bin/python benchmarks/bench_3d_engine.py --parts training --steps 3 --rounds 1
    .venv/bin/python benchmarks/bench_3d_engine.py --parts prediction --shape 16 64 64 --predict-rounds 1
    .venv/bin/python benchmarks/bench_3d_engine.py --parts memory --gigabytes 0.002 --side 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import numpy as np
import torch

from napari_pix2pix import TrainingConfig, predict, save_model
from napari_pix2pix.devices import autocast
from napari_pix2pix.labels.encodings import InstanceEncoding
from napari_pix2pix.models import ModelConfig, Normalisation, TrainedModel, build_model, plan_z_skip
from napari_pix2pix.models.networks import get_architecture
from napari_pix2pix.prediction import PredictionSettings, volume_geometry
from napari_pix2pix.prediction.objects3d import SLAB_VOXELS
from napari_pix2pix.prediction.tiling import mirrored_indices
from napari_pix2pix.prediction.volume import block_plan
from napari_pix2pix.samples.confocal import nuclei_volume
from napari_pix2pix.samples.loaders import nuclei_3d_sample
from napari_pix2pix.training.events import EventKind
from napari_pix2pix.training.loop import Trainer
from napari_pix2pix.training.steps import Precision, segmentation_loss

SCRIPT = Path(__file__).resolve()
LOG = common.REPO / "docs" / "engine_runs_3d.jsonl"
VOXEL = (0.28, 0.128, 0.128)  # (z, y, x) µm: z 2.2× the pixel size, so the first level pools in-plane only
PARTS = ("training", "prediction", "memory")
BATCH = 4  # the engine's default batch
INSTANCE_CLASSES = 3  # background, interior, boundary: what annotation="instances" trains
MiB = 2**20
# 3D instances: float16 class probabilities of the block (6 bytes a voxel), the float32 elevation,
# the watershed's markers, masks, float64 and padded copies and output (about 31, measured on 32 × 1024²):
# an estimate, to skip what cannot fit.
INSTANCE_BYTES = 37


def record(args, part: str, row: dict, device: str | None = None) -> None:
    """Print one measurement as a JSON line; append it to ``--log-file`` with ``--log``."""
    machine = common.machine(torch.device(device or args.device))
    row = {"part": part, **row, "date": time.strftime("%Y-%m-%d"), "machine": machine}
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    print(json.dumps(row, ensure_ascii=False), flush=True)
    if args.log:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
        with args.log_file.open("a", encoding="utf-8") as log:
            log.write(json.dumps(row, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- training


def training_volume(shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic 3D nuclei sample, or a stack of nuclei of ``shape`` at the benchmark's voxel size."""
    if shape is None:
        return nuclei_3d_sample()
    return nuclei_volume(shape=shape, voxel_size=VOXEL, seed=0)


def engine_config(args, epochs: int) -> TrainingConfig:
    return TrainingConfig(
        dims="3d",
        epochs=epochs,
        steps_per_epoch=args.steps,
        max_minutes=None,
        annotation="instances",
        voxel_size=VOXEL,
        seed=0,
        val_fraction=args.val_fraction,
        device=args.device,
        batch_size=BATCH,  # given, so the engine keeps it (an automatic batch may shrink to fit the memory)
    )


def bare_training_step(trainer: Trainer, device: torch.device):
    """A hand-written step of the network the engine planned (width, depth, ``z_skip``), a fresh copy
    with the engine's optimiser settings, on tensors of the engine's batch and (z, y, x) patch made once."""
    config = trainer.config  # the run's config as the engine planned it (model "unet-3d")
    torch.manual_seed(0)
    network = build_model(trainer.model.config).to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, betas=config.architecture.betas)
    batch, patch = trainer.batch_size, tuple(trainer.sampler.patch)
    images = torch.rand(batch, 1, *patch, device=device)
    targets = torch.randint(0, trainer.model.config.out_channels, (batch, *patch), device=device)
    precision = Precision(device, config.mixed_precision)

    def step() -> None:
        with precision.autocast():
            logits = network(images)
        loss = segmentation_loss(logits.float(), targets)
        optimiser.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimiser)
        precision.scaler.update()

    return step


def next_epoch(events) -> float:
    """Seconds until the running ``train`` generator's next 'epoch' event (an epoch of steps)."""
    start = time.perf_counter()
    while next(events).kind != EventKind.EPOCH:
        pass
    return time.perf_counter() - start


def benchmark_training(args) -> None:
    device = torch.device(args.device)
    image, labels = training_volume(args.train_shape)
    config = engine_config(args, epochs=1 + args.rounds)
    started = time.perf_counter()
    trainer = Trainer(image, labels, config)  # what ``train`` and ``fit`` run: checks, encoding, network, plan
    setup = time.perf_counter() - started
    step = bare_training_step(trainer, device)
    events = trainer.run()
    next_epoch(events)  # warm-up: the first epoch (first batches, allocator)
    common.time_steps(step, 2, device)
    engine, bare = [], []
    for round_ in range(args.rounds):  # which goes first alternates, so neither always follows the other
        if round_ % 2:
            bare.append(common.time_steps(step, args.steps, device) * args.steps)
        engine.append(next_epoch(events))
        if not round_ % 2:
            bare.append(common.time_steps(step, args.steps, device) * args.steps)
    for _ in events:  # let the engine finish cleanly
        pass
    planned = trainer.model.config
    engine_s, bare_s = float(np.median(engine)) / args.steps, float(np.median(bare)) / args.steps
    row = {
        "volume": "×".join(map(str, labels.shape)),
        "network": f"UNet3D width {planned.width}, depth {planned.depth}, z_skip {planned.z_skip}",
        "z_skip_of_voxel_size": plan_z_skip(VOXEL, planned.depth),
        "patch_zyx": "×".join(map(str, trainer.sampler.patch)),
        "batch": trainer.batch_size,
        "memory_note": getattr(trainer, "memory_note", ""),
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "val_fraction": args.val_fraction,
        "setup_s": setup,
        "bare_steps_per_s": 1 / bare_s,
        "engine_steps_per_s": 1 / engine_s,
        "engine_over_bare": bare_s / engine_s,
        "engine_over_bare_all_rounds": sum(bare) / sum(engine),
        "target": ">= 0.9",
    }
    record(args, "training", row)
    print(
        f"training: engine {row['engine_steps_per_s']:.3g} steps/s, bare {row['bare_steps_per_s']:.3g} steps/s, "
        f"engine/bare {row['engine_over_bare']:.3f} (target >= 0.9)",
        flush=True,
    )


# ----------------------------------------------------------------------------- prediction


def volume_model(width: int = 16, depth: int | None = None) -> TrainedModel:
    """A 3D U-Net with random weights, instance classes, the benchmark's voxel size and the identity
    normalisation (the volume is float32 in [0, 1))."""
    torch.manual_seed(0)
    depth = depth if depth is not None else get_architecture("unet-3d").depth
    config = ModelConfig("unet-3d", 1, INSTANCE_CLASSES, width, depth, z_skip=plan_z_skip(VOXEL, depth))
    return TrainedModel(
        config, build_model(config).eval(), InstanceEncoding(), Normalisation((0.0,), (1.0,)), 64, voxel_size=VOXEL
    )


def engine_blocks(model: TrainedModel, volume: np.ndarray, device: torch.device):
    """The engine's blocks of ``volume`` (``block_plan``, mirrored at the edges), cut now and batched
    as the engine batches them: a list of (inputs on the device, where each block's centre goes)."""
    settings = PredictionSettings(device=str(device))
    plan = block_plan(model, volume_geometry(volume.shape, model), settings)
    normalised = model.normalisation.apply(volume[..., None])[..., 0]
    depth, height, width = volume.shape
    places = [
        (z, y, x)
        for z in range(0, depth, plan.z_keep)
        for y in range(0, height, plan.keep)
        for x in range(0, width, plan.keep)
    ]
    batch_size = max(1, settings.batch_size or 2)  # as prediction.volume.predict_slab
    batches = []
    for first in range(0, len(places), batch_size):
        chosen = places[first : first + batch_size]
        windows = [
            normalised[
                np.ix_(
                    mirrored_indices(z - plan.z_halo, z - plan.z_halo + plan.slab, depth),
                    mirrored_indices(y - plan.halo, y - plan.halo + plan.block, height),
                    mirrored_indices(x - plan.halo, x - plan.halo + plan.block, width),
                )
            ]
            for z, y, x in chosen
        ]
        batches.append((torch.from_numpy(np.stack(windows)[:, None]).to(device), chosen))
    return plan, batches, batch_size


def bare_blocked_pass(network, plan, batches, shape: tuple[int, ...], device: torch.device) -> np.ndarray:
    """The network over the blocks, the argmax of each block's centre copied into the output."""
    out = np.empty(shape, np.uint8)
    with torch.inference_mode(), autocast(device):
        for inputs, places in batches:
            classes = network(inputs).argmax(dim=1).to(torch.uint8).cpu().numpy()
            for (z, y, x), block in zip(places, classes):
                d, h, w = min(plan.z_keep, shape[0] - z), min(plan.keep, shape[1] - y), min(plan.keep, shape[2] - x)
                core = block[plan.z_halo : plan.z_halo + d, plan.halo : plan.halo + h, plan.halo : plan.halo + w]
                out[z : z + d, y : y + h, x : x + w] = core
    return out


def timed(function, device: torch.device):
    """(seconds, result) of ``function()``."""
    common.synchronize(device)
    start = time.perf_counter()
    result = function()
    common.synchronize(device)
    return time.perf_counter() - start, result


def benchmark_prediction(args) -> None:
    device = torch.device(args.device)
    model = volume_model(depth=args.depth)
    volume = np.random.default_rng(0).random(tuple(args.shape), dtype=np.float32)
    plan, batches, batch_size = engine_blocks(model, volume, device)
    network = model.network.to(device).eval()
    # Warm-up: a small volume through the engine, one batch through the bare pass.
    predict(model, volume[: plan.z_keep, :64, :64], "labels", device=str(device))
    bare_blocked_pass(network, plan, batches[:1], volume.shape, device)
    runs = {
        "engine": lambda: predict(model, volume, "labels", device=str(device)),
        "bare": lambda: bare_blocked_pass(network, plan, batches, volume.shape, device),
    }
    times: dict[str, list[float]] = {"engine": [], "bare": []}
    outputs = {}
    for round_ in range(args.predict_rounds):  # interleaved, the first of the two alternating
        for name in ("engine", "bare") if round_ % 2 == 0 else ("bare", "engine"):
            seconds, outputs[name] = timed(runs[name], device)
            times[name].append(seconds)
    engine, bare = times["engine"], times["bare"]
    engine_labels, bare_classes = outputs["engine"], outputs["bare"]
    fed = sum(len(places) for _, places in batches) * plan.slab * plan.block**2
    engine_s, bare_s = min(engine), min(bare)
    row = {
        "volume": "×".join(map(str, volume.shape)) + " float32",
        "network": f"UNet3D width {model.config.width}, depth {model.config.depth}, z_skip {model.config.z_skip}",
        "block_zyx": f"{plan.slab}×{plan.block}×{plan.block} keeping {plan.z_keep}×{plan.keep}×{plan.keep}",
        "blocks_per_pass": batch_size,
        "blocks": sum(len(places) for _, places in batches),
        "network_voxels_per_volume_voxel": fed / volume.size,
        "rounds": args.predict_rounds,
        "bare_s": bare_s,
        "engine_s": engine_s,
        "engine_mvoxels_per_s": volume.size / engine_s / 1e6,
        "engine_speed_fraction_of_bare": bare_s / engine_s,
        "labels_agreeing_with_bare": float(np.mean(engine_labels == (bare_classes != 0))),
        "target": ">= 0.85",
    }
    record(args, "prediction", row)
    print(
        f"prediction: engine {engine_s:.3g} s, bare blocked pass {bare_s:.3g} s, engine speed as a fraction of "
        f"bare {row['engine_speed_fraction_of_bare']:.3f} (target >= 0.85)",
        flush=True,
    )


# ----------------------------------------------------------------------------- memory


def write_volume_tiff(path: Path, depth: int, side: int) -> None:
    """A uint8 stack, one slice at a time, each tiled from a slice of the 3D nuclei sample: an
    uncompressed, contiguous TIFF, which the command line memory-maps."""
    import tifffile

    sample = nuclei_3d_sample()[0].astype(np.float32)
    sample = (255 * sample / sample.max()).astype(np.uint8)
    reps = -(-side // sample.shape[1]), -(-side // sample.shape[2])

    def planes():
        for z in range(depth):
            yield np.tile(sample[z % len(sample)], reps)[:side, :side]

    tifffile.imwrite(path, data=planes(), shape=(depth, side, side), dtype=np.uint8, bigtiff=depth * side**2 > 2**31)


def status_mib() -> dict:
    """VmRSS, RssAnon and RssFile of this process in MiB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class PeakSampler(threading.Thread):
    """Samples ``status_mib`` every ``interval`` seconds and keeps each field's peak."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peaks, self.done = interval, {}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            for name, value in status_mib().items():
                self.peaks[name] = max(value, self.peaks.get(name, 0.0))


def measure_child(model_path: str, source: str, target: str, output: str) -> dict:
    """In a fresh process: the baseline after importing the command line and loading the model, then
    the command line's ``predict`` of the TIFF, and the peaks (MiB)."""
    from napari_pix2pix.cli import main
    from napari_pix2pix.io import load_model, read_tiff

    load_model(model_path)
    opened = read_tiff(source, lazy=True)
    lazy = isinstance(opened, np.memmap) or not isinstance(opened, np.ndarray)  # memory-mapped, or a Zarr array
    baseline = status_mib()
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    status = main(["predict", model_path, source, "--out", target, "--output", output, "--device", "cpu", "--quiet"])
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {
        "status": status,
        "memory_mapped": lazy,
        "seconds": seconds,
        "baseline": baseline["VmRSS"],
        "baseline_anon": baseline["RssAnon"],
        "baseline_file": baseline["RssFile"],
        "peak": peak,
        "peak_anon": sampler.peaks.get("RssAnon", baseline["RssAnon"]),
        "peak_file": sampler.peaks.get("RssFile", baseline["RssFile"]),
    }


def run_child(model_path: Path, source: Path, target: Path, output: str, default_malloc: bool) -> dict:
    command = [sys.executable, str(SCRIPT), "--child", str(model_path), str(source), str(target), output]
    environment = dict(os.environ) if default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode:
        raise RuntimeError(f"the measuring process failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def benchmark_memory(args) -> None:
    depth = max(1, round(args.gigabytes * 1e9 / args.side**2))
    voxels = depth * args.side**2
    # the voxels one watershed holds (objects3d.slab_plan: a block grows to 3 halos of a quarter of 16 slices)
    held = min(voxels, max(SLAB_VOXELS, 12 * args.side**2))
    if args.output == "instances" and held * INSTANCE_BYTES / MiB > 0.8 * available_mib():
        print(
            f"memory: skipped; 3D instances of {held / 1e9:.2f} G voxels at once need about "
            f"{held * INSTANCE_BYTES / 2**30:.0f} GiB (class probabilities as float16 and float32, "
            f"the watershed's arrays), {available_mib() / 1024:.0f} GiB are available; use a smaller --side",
            flush=True,
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench_3d_engine_") as folder:
        model_path, source, target = Path(folder) / "model.pt", Path(folder) / "in.tif", Path(folder) / "out.tif"
        model = volume_model(width=args.width, depth=args.depth)
        save_model(model, model_path)
        started = time.perf_counter()
        write_volume_tiff(source, depth, args.side)
        written = time.perf_counter() - started
        child = run_child(model_path, source, target, args.output, args.default_malloc)
    row = {
        "volume": f"{depth}×{args.side}×{args.side} uint8",
        "volume_mib": voxels / MiB,
        "network": f"UNet3D width {args.width}, depth {model.config.depth}, z_skip {model.config.z_skip}",
        "output": args.output,
        "memory_mapped": child["memory_mapped"],
        "baseline_mib": child["baseline"],
        "peak_mib": child["peak"],
        "peak_minus_baseline_mib": child["peak"] - child["baseline"],
        "peak_over_volume": child["peak"] / (voxels / MiB),
        "volume_gb": voxels / 1e9,
        "peak_gb": child["peak"] * MiB / 1e9,
        "baseline_anon_mib": child["baseline_anon"],
        "peak_anon_mib": child["peak_anon"],
        "baseline_file_backed_mib": child["baseline_file"],
        "peak_file_backed_mib": child["peak_file"],
        "malloc": "default" if args.default_malloc else "MALLOC_MMAP_THRESHOLD_=131072",
        "write_tiff_s": written,
        "predict_s": child["seconds"],
        "target": "peak <= 2 GB for a 1 GB volume",
    }
    record(args, "memory", row, device="cpu")
    print(
        f"memory: {row['volume']} ({row['volume_mib']:.0f} MiB), output {args.output}: baseline "
        f"{row['baseline_mib']:.0f} MiB, peak {row['peak_mib']:.0f} MiB (+{row['peak_minus_baseline_mib']:.0f}); "
        f"anonymous {row['baseline_anon_mib']:.0f} -> {row['peak_anon_mib']:.0f} MiB, file-backed "
        f"{row['baseline_file_backed_mib']:.0f} -> {row['peak_file_backed_mib']:.0f} MiB "
        "(target: peak <= 2 GB for a 1 GB volume)",
        flush=True,
    )


# ----------------------------------------------------------------------------- main


def parse_arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default: all)")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' for training and prediction (default: cpu)")
    p.add_argument("--log", action="store_true", help=f"append the JSON lines to {LOG.relative_to(common.REPO)}")
    p.add_argument("--log-file", type=Path, default=LOG, help=argparse.SUPPRESS)
    training = p.add_argument_group("training")
    training.add_argument("--rounds", type=int, default=4, help="interleaved engine/bare rounds (default 4)")
    training.add_argument("--steps", type=int, default=5, help="steps per round, one epoch each (default 5)")
    training.add_argument("--val-fraction", type=float, default=0.0, help="held out and validated (default 0)")
    training.add_argument(
        "--train-shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="synthetic nuclei stack instead of the sample"
    )
    prediction = p.add_argument_group("prediction")
    prediction.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256], metavar=("Z", "Y", "X"))
    prediction.add_argument(
        "--predict-rounds", type=int, default=2, help="interleaved engine/bare passes, best kept (default 2)"
    )
    memory = p.add_argument_group("memory")
    memory.add_argument("--gigabytes", type=float, default=1.0, help="size of the uint8 volume (default 1.0)")
    memory.add_argument("--side", type=int, default=2048, help="slice side in pixels (default 2048)")
    memory.add_argument("--width", type=int, default=4, help="the 3D U-Net's width (default 4)")
    memory.add_argument("--output", choices=("labels", "instances"), default="labels")
    memory.add_argument("--default-malloc", action="store_true", help="glibc's default allocator settings")
    p.add_argument(
        "--depth", type=int, default=None, help="prediction and memory: the 3D U-Net's levels (default: unet-3d's)"
    )
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_arguments()
    # SIGTERM ends like Ctrl-C: the measuring process is killed and the temporary folder removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.child:
        print(json.dumps(measure_child(*args.child)))
        return
    if "training" in args.parts:
        benchmark_training(args)
    if "prediction" in args.parts:
        benchmark_prediction(args)
    if "memory" in args.parts:
        benchmark_memory(args)


if __name__ == "__main__":
    main()
