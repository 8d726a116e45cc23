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

import time

import common
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from napari_pix2pix import training
from napari_pix2pix.devices import autocast
from napari_pix2pix.models import ModelConfig, build_discriminator, build_model, crop
from napari_pix2pix.steps import segmentation_loss
from napari_pix2pix.synthetic import membrane_volume

STEPS_PER_EPOCH = training.TrainingConfig().steps_per_epoch


def bare_step_function(architecture: str, config: training.TrainingConfig, device: torch.device):
    """A hand-written training step with the engine's network, optimiser and loss on fixed tensors."""
    model_config = ModelConfig(architecture, 1, 2, config.width, config.depth)
    network = build_model(model_config).to(device).train()
    betas = config.architecture.betas
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, betas=betas)
    images = torch.rand(config.batch_size, 1, config.patch, config.patch, device=device)
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

    discriminator = build_discriminator(model_config).to(device).train()
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


def time_bare(step, steps: int, device: torch.device) -> float:
    """Seconds per step of ``steps`` back-to-back bare steps."""
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    common.synchronize(device)
    return (time.perf_counter() - start) / steps


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


def benchmark(architecture: str, image, labels, device: torch.device, steps: int, rounds: int, amp: bool) -> dict:
    """Interleave engine and bare steps for one architecture; return a table row."""
    config = training.TrainingConfig(
        model=architecture,
        device=str(device),
        max_minutes=None,
        epochs=2,
        steps_per_epoch=2 + rounds * steps,
        mixed_precision=amp,
        seed=0,
    )
    torch.manual_seed(0)
    bare = bare_step_function(architecture, config, device)
    events = training.train(image, labels, config)
    # Warm-up: a whole first epoch (first batches, allocator, kernel choices, first validation).
    epoch_cost(events)
    time_engine(events, 2)
    time_bare(bare, 2, device)
    engine_times, bare_times = [], []
    for _ in range(rounds):
        engine_times += time_engine(events, steps)
        bare_times.append(time_bare(bare, steps, device))
    validation = epoch_cost(events)
    for _ in events:  # let the engine finish cleanly
        pass
    engine = float(np.median(engine_times)) + validation / STEPS_PER_EPOCH
    bare_s = float(np.median(bare_times))
    flops = step_flops(bare)
    return {
        "model": architecture,
        "patch": config.patch,
        "batch": config.batch_size,
        "bare steps/s": 1 / bare_s,
        "engine steps/s": 1 / engine,
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
    args = p.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    image, labels, _ = membrane_volume((8, 256, 256), seed=0)
    ceiling = common.matmul_gflops(device)
    rows = []
    for architecture in args.models:
        row = benchmark(architecture, image, labels, device, args.steps, args.rounds, amp)
        row["% of fp32 matmul"] = 100 * row["engine GFLOP/s"] / ceiling
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
