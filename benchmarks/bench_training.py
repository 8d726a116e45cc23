"""Training throughput: the engine's ``train`` loop against a bare PyTorch loop on pre-made tensors.

Both run the same network, optimiser, loss, batch and patch size, interleaved in one process so a
busy machine slows both alike. The engine's figure includes patch sampling, augmentation, the
host-to-device copy, its per-step bookkeeping and its once-per-epoch validation (amortised over the
default 20 steps per epoch). A whole first epoch is a warm-up; the second is timed. Engine steps are
timed one by one and bare steps in short blocks, in interleaved rounds, and the medians are kept,
so bursts of other work on a shared machine count little. The achieved GFLOP/s
(``torch.utils.flop_counter`` on the bare step) is set against the measured float32
matrix-multiply rate, the physical ceiling here.
"""

from __future__ import annotations

import itertools
import time

import common
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from napari_pix2pix import devices, training
from napari_pix2pix.devices import autocast
from napari_pix2pix.models import ModelConfig, build_discriminator, build_model, crop
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training.steps import segmentation_loss

STEPS_PER_EPOCH = training.TrainingConfig().steps_per_epoch


def bare_step_function(
    architecture: str, config: training.TrainingConfig, device: torch.device, channels_last: bool = False
):
    """A hand-written training step with the engine's network, optimiser and loss on fixed tensors."""
    model_config = ModelConfig(architecture, 1, 2, config.width, config.levels)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    network = build_model(model_config).to(device, memory_format=layout).train()
    betas = config.architecture.betas
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, betas=betas)
    images = torch.rand(config.batch_size, 1, config.patch, config.patch, device=device)
    images = images.contiguous(memory_format=layout)
    targets = torch.randint(0, 2, (config.batch_size, config.patch, config.patch), device=device)
    amp = config.mixed_precision and device.type == "cuda"
    if architecture != "pix2pix":

        def step():
            with autocast(device, amp):
                logits = network(images)
            loss = segmentation_loss(logits.float(), crop(targets, logits.shape))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        return step

    discriminator = build_discriminator(model_config).to(device, memory_format=layout).train()
    d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas)
    real = F.one_hot(targets, 2).permute(0, 3, 1, 2).float()

    def step():
        with autocast(device, amp):
            fake = torch.softmax(network(images).float(), dim=1)
            real_logits, fake_logits = discriminator(images, real), discriminator(images, fake.detach())
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits.float()))
            + F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits.float()))
        )
        d_optimiser.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimiser.step()
        with autocast(device, amp):
            judged = discriminator(images, fake)
        g_loss = (
            F.binary_cross_entropy_with_logits(judged.float(), torch.ones_like(judged.float()))
            + config.l1_weight * (fake - real).abs().mean()
        )
        optimiser.zero_grad(set_to_none=True)
        g_loss.backward()
        optimiser.step()

    return step


def time_engine(events, steps: int) -> list[float]:
    """Seconds between ``steps`` consecutive 'step' events of the running ``train`` generator."""
    times = []
    last = time.perf_counter()
    while len(times) < steps:
        if next(events).kind == training.EventKind.STEP:
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return times


def epoch_cost(events) -> float:
    """Seconds from the last step to the 'epoch' event: validation and keeping the best weights."""
    start = time.perf_counter()
    while next(events).kind != training.EventKind.EPOCH:
        pass
    return time.perf_counter() - start


def step_flops(step) -> float:
    """Floating-point operations of one training step (forward, backward, both networks for pix2pix)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def benchmark(
    architecture: str, image, labels, device: torch.device, steps: int, rounds: int, amp: bool, batch: int
) -> dict:
    """Interleave engine and bare steps for one architecture; return a table row.

    On CUDA the bare loop runs in both memory layouts (contiguous and channels-last) and the faster
    one is the baseline, so the ratio is against the best a hand-written loop gets here.
    """
    config = training.TrainingConfig(
        model=architecture,
        device=str(device),
        max_minutes=None,
        epochs=2,
        steps_per_epoch=2 + rounds * steps,
        batch_size=batch,
        mixed_precision=amp,
        seed=0,
    )
    torch.manual_seed(0)
    layouts = (False, True) if device.type == "cuda" else (False,)
    bares = {last: bare_step_function(architecture, config, device, last) for last in layouts}
    events = training.train(image, labels, config)
    # Warm-up: a whole first epoch (first batches, allocator, kernel choices, first validation).
    epoch_cost(events)
    time_engine(events, 2)
    for bare in bares.values():
        common.time_steps(bare, 2, device)
    engine_times: list[float] = []
    bare_times: dict[bool, list[float]] = {channels_last: [] for channels_last in bares}
    for _ in range(rounds):
        engine_times += time_engine(events, steps)
        for channels_last, bare in bares.items():
            bare_times[channels_last].append(common.time_steps(bare, steps, device))
    validation = epoch_cost(events)
    for _ in events:  # let the engine finish cleanly
        pass
    engine = float(np.median(engine_times)) + validation / STEPS_PER_EPOCH
    best_layout = min(bare_times, key=lambda k: float(np.median(bare_times[k])))
    bare_s = float(np.median(bare_times[best_layout]))
    flops = step_flops(bares[best_layout])
    megapixels = batch * config.patch**2 / 1e6
    return {
        "model": architecture,
        "patch": config.patch,
        "batch": batch,
        "bare layout": "channels-last" if best_layout else "contiguous",
        "bare steps/s": 1 / bare_s,
        "engine steps/s": 1 / engine,
        "engine MP/s": megapixels / engine,
        "engine / bare": bare_s / engine,
        "validation s/epoch": validation,
        "GFLOP/step": flops / 1e9,
        "engine GFLOP/s": flops / engine / 1e9,
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["unet", "seed-unet", "pix2pix"])
    p.add_argument("--steps", type=int, default=2, help="timed steps per round (default 2)")
    p.add_argument("--rounds", type=int, default=6, help="engine/bare rounds, interleaved; medians kept (default 6)")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of mixed precision")
    p.add_argument("--label", default="", help="tag for the rows, e.g. 'before'")
    p.add_argument("--batches", type=int, nargs="+", default=[4], help="batch sizes to run (default: 4, the engine's)")
    p.add_argument(
        "--layouts", action="store_true", help="on CUDA, also run the engine on contiguous tensors (channels-last A/B)"
    )
    args = p.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    image, labels, _ = membrane_volume((8, 256, 256), seed=0)
    ceiling = common.matmul_gflops(device)
    rows = []
    engine_layouts = (True, False) if args.layouts and device.type == "cuda" else (devices.CHANNELS_LAST_ON_CUDA,)
    for architecture, batch, channels_last in itertools.product(args.models, args.batches, engine_layouts):
        devices.CHANNELS_LAST_ON_CUDA = channels_last
        row = benchmark(architecture, image, labels, device, args.steps, args.rounds, amp, batch)
        row["% of fp32 matmul"] = 100 * row["engine GFLOP/s"] / ceiling
        if device.type == "cuda":
            row = {"engine layout": "channels-last" if channels_last else "contiguous", **row}
        row = {"engine": args.label, **row} if args.label else row
        rows.append(row)
        print(row, flush=True)
    precision = "mixed precision (autocast)" if amp else "float32"
    notes = [
        f"Machine: {common.machine(device)}; {precision}.",
        f"Measured float32 matmul rate: {ceiling:,.0f} GFLOP/s.",
    ]
    if amp:
        notes.append(f"Measured bfloat16 matmul rate: {common.matmul_gflops(device, torch.bfloat16):,.0f} GFLOP/s.")
    title = f"Training throughput ({args.device}{', ' + args.label if args.label else ''})"
    common.report(args, "bench_training.py", title, " ".join(notes) + "\n\n" + common.markdown_table(rows), args.label)


if __name__ == "__main__":
    main()
