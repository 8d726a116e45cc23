"""Prediction throughput: the engine's tiled ``predict`` on a 3D stack against bare forward passes.

The engine reads each slice, normalises it, mirror-pads and tiles it, batches tiles across slices,
blends the overlaps and turns the probabilities into labels. The bare baseline runs the same
network once over the same slices, already normalised and on the device, and keeps the raw output.
For the seed U-Net (valid convolutions) the bare pass gives a smaller output than its input; the
engine pads the slices with mirrored context so every pixel gets a label, and that cost is shown
on its own: the network alone on the engine's tiles against the bare pass is the padding's cost, and
the engine against the network on its tiles is the cost of everything else.
"""

from __future__ import annotations

import itertools
import time

import common
import numpy as np
import torch

from napari_pix2pix.devices import autocast, tile_batch
from napari_pix2pix.labels.encodings import DenseEncoding
from napari_pix2pix.models import ModelConfig, Normalisation, build_model
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix.prediction import predict
from napari_pix2pix.prediction.tiling import tile_layout
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training import TrainingConfig

BATCH = 4  # the engine's default tile batch; the bare pass takes as many slices at a time


def untrained_model(architecture: str, image: np.ndarray) -> TrainedModel:
    """A model with random weights (speed does not depend on them) and the image's normalisation."""
    torch.manual_seed(0)
    config = ModelConfig(architecture, 1, 2)
    normalisation = Normalisation.fit(image[..., None])
    patch = TrainingConfig(model=architecture).patch
    return TrainedModel(config, build_model(config).eval(), DenseEncoding((0, 1)), normalisation, patch)


def time_engine(model: TrainedModel, stack: np.ndarray, device: torch.device, batch: int | None = None) -> float:
    predict(model, stack[:1], device=str(device), batch_size=batch)  # warm-up
    common.synchronize(device)
    start = time.perf_counter()
    predict(model, stack, device=str(device), batch_size=batch)
    return time.perf_counter() - start


def time_bare(
    model: TrainedModel, stack: np.ndarray, device: torch.device, batch: int = BATCH, channels_last: bool = False
) -> float:
    """One forward pass over the normalised slices, ``batch`` at a time, output left on the device."""
    inputs = torch.from_numpy(model.normalisation.apply(stack[:, None])).to(device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        model.network.to(memory_format=torch.channels_last)
    else:
        model.network.to(memory_format=torch.contiguous_format)
    return _time_forward(model, [inputs[i : i + batch] for i in range(0, len(inputs), batch)], device)


def time_tiles(model: TrainedModel, stack: np.ndarray, device: torch.device) -> float:
    """The network alone on as many tiles of the engine's input size as the engine feeds it, ``BATCH``
    at a time, on a tensor made once: the engine's work minus everything but the network."""
    layout = tile_layout(model, *stack.shape[1:], None, None)
    count = len(layout.tiles) * len(stack)
    tiles = torch.rand(BATCH, 1, layout.in_h, layout.in_w, device=device)
    return _time_forward(model, [tiles[: min(BATCH, count - i)] for i in range(0, count, BATCH)], device)


def _time_forward(model: TrainedModel, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds for the network's forward passes over ``batches``, after one warm-up pass."""
    network = model.network.to(device).eval()

    def run(inputs):
        with torch.inference_mode(), autocast(device):
            for batch in inputs:
                network(batch)
        common.synchronize(device)

    run(batches[:1])
    start = time.perf_counter()
    run(batches)
    return time.perf_counter() - start


def padding_factor(model: TrainedModel, height: int, width: int) -> float:
    """Input pixels the engine's tiles feed the network per pixel of the slice."""
    layout = tile_layout(model, height, width, None, None)
    return len(layout.tiles) * layout.in_h * layout.in_w / (height * width)


def benchmark(architecture: str, stack: np.ndarray, device: torch.device, rounds: int, batch: int | None) -> dict:
    """Engine (tile batch ``batch``, None: the device's default) against the best bare pass: on CUDA
    the fastest of 4, 16 and 32 slices per pass in both memory layouts."""
    model = untrained_model(architecture, stack)
    megapixels = stack.size / 1e6
    variants = list(itertools.product((BATCH, 16, 32), (False, True))) if device.type == "cuda" else [(BATCH, False)]
    engine, tiles = [], []
    bare: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
    for _ in range(rounds):  # interleaved, so a busy machine slows all alike
        engine.append(time_engine(model, stack, device, batch))
        for slices, channels_last in variants:
            bare[slices, channels_last].append(time_bare(model, stack, device, slices, channels_last))
        if not model.network.padded:
            tiles.append(time_tiles(model, stack, device))
    best = min(bare, key=lambda v: min(bare[v]))
    engine_s, bare_s = min(engine), min(bare[best])
    factor = padding_factor(model, *stack.shape[1:])
    row = {
        "model": architecture,
        "stack": "×".join(map(str, stack.shape)),
        "tile batch": tile_batch(device, batch),
        "bare": f"{best[0]} slices, {'channels-last' if best[1] else 'contiguous'}",
        "bare MP/s": megapixels / bare_s,
        "engine MP/s": megapixels / engine_s,
        "engine / bare": bare_s / engine_s,
        "network input px per slice px": factor,
    }
    if tiles:
        row["network on the engine's tiles / bare"] = bare_s / min(tiles)
        row["engine / network on its tiles"] = min(tiles) / engine_s
    return row


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["unet", "seed-unet", "pix2pix"])
    p.add_argument("--slices", type=int, default=None, help="stack depth (default: 4 on CPU, 64 on CUDA)")
    p.add_argument("--size", type=int, default=512, help="slice side in pixels (default 512)")
    p.add_argument("--rounds", type=int, default=2, help="timed repetitions, best kept (default 2)")
    p.add_argument("--label", default="", help="tag for the rows, e.g. 'before'")
    p.add_argument("--batches", type=int, nargs="+", default=[0], help="engine tile batches (default: 0, the device's)")
    args = p.parse_args()
    device = torch.device(args.device)
    slices = args.slices or (64 if device.type == "cuda" else 4)
    stack, _, _ = membrane_volume((slices, args.size, args.size), seed=0)
    rows = []
    for architecture, batch in itertools.product(args.models, args.batches):
        row = benchmark(architecture, stack, device, args.rounds, batch or None)
        rows.append({"engine": args.label, **row} if args.label else row)
        print(rows[-1], flush=True)
    precision = "mixed precision (autocast)" if device.type == "cuda" else "float32"
    notes = (
        f"Machine: {common.machine(device)}; {precision}; output: labels; "
        "MP = megapixels of the stack; best of the rounds."
    )
    title = f"Prediction throughput ({args.device}{', ' + args.label if args.label else ''})"
    common.report(args, "bench_prediction.py", title, notes + "\n\n" + common.markdown_table(rows), args.label)


if __name__ == "__main__":
    main()
