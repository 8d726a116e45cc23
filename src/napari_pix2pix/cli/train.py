"""``napari-pix2pix train``: training that survives interruption (signals, checkpoints), alone or under torchrun."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..scale import distributed
from .common import Progress, check_output, signal_handlers

MODEL_ROOM = 64 * 2**20  # free space asked for before training: far more than a model file takes


def run_train(args) -> int:
    from ..io import load_model, read_image, read_tiff, save_model
    from ..io.atomic import check_writable
    from ..io.batch import training_pairs
    from ..training.loop import Trainer, TrainingConfig

    group = distributed.from_environment()  # set by torchrun; only rank 0 prints and writes
    main_rank = group is None or group.is_main
    pairs = training_pairs(args.paths)
    if main_rank:
        check_output(args.out, *(str(p) for pair in pairs for p in pair))  # --out may be the --resume model
        check_writable(args.out, needed_bytes=MODEL_ROOM)  # before training, not after it
    images = [read_image(image) for image, _ in pairs]
    arrays = [(np.asarray(image), read_tiff(labels)) for (image, _), (_, labels) in zip(images, pairs)]
    pixel_size = args.pixel_size or next((tuple(scale[-2:]) for _, scale in images if scale), None)
    resume = load_model(args.resume) if args.resume else None
    options = (("width", args.width), ("depth", args.depth), ("boundary_weight", args.boundary_weight))
    settings = {k: v for k, v in options if v is not None}
    config = TrainingConfig(
        model=args.model,
        annotation=args.annotation,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.lr,
        val_fraction=args.val_fraction,
        augment=not args.no_augment,
        device=args.device,
        seed=args.seed,
        normalisation=args.normalise,
        pixel_size=pixel_size,
        **settings,
    )
    stop = threading.Event()
    checkpoint = Checkpoint(Path(f"{args.out}.partial"), args.checkpoint_minutes if main_rank else 0)
    try:
        with _stop_on_signals(stop) as received, Progress(args.quiet or not main_rank, "training") as bar:
            bar.silent = not main_rank
            trainer = Trainer(arrays, config, stop=stop, resume=resume, group=group)
            with checkpoint:
                for event in trainer.run():
                    bar.training_event(event)
                    checkpoint.after(event, trainer)
            if main_rank:
                save_model(trainer.model, args.out)
    finally:
        distributed.leave()
    if not main_rank:
        return 0
    checkpoint.remove()
    if received:
        print(
            f"interrupted ({received[0].name}): saved the best model so far, {trainer.model.describe()}, "
            f"to {args.out}; continue it with --resume {args.out}"
        )
        return 128 + received[0].value
    ranks = f" (trained by {group.world_size} processes)" if group is not None else ""
    print(f"saved {trainer.model.describe()}{ranks} to {args.out}")
    return 0


class Checkpoint:
    """Saves the model being trained to ``path`` every ``minutes`` (at epoch ends), so a run that is
    killed outright (SIGKILL, a power cut) can go on with ``--resume`` and lose minutes, not the run.
    Removed once the final model is saved; if the run fails, the message says where it is."""

    def __init__(self, path: Path, minutes: float):
        self.path, self.seconds = path, minutes * 60
        self.last = time.monotonic()
        self.written = False

    def __enter__(self):
        self.last = time.monotonic()
        return self

    def after(self, event, trainer) -> None:
        from ..io import save_model
        from ..training.loop import EventKind

        if self.seconds <= 0 or event.kind != EventKind.EPOCH or time.monotonic() - self.last < self.seconds:
            return
        save_model(trainer.checkpoint(), self.path)
        self.last, self.written = time.monotonic(), True

    def __exit__(self, kind, error, traceback):
        if kind is not None and self.written and self.path.exists():
            print(
                f"napari-pix2pix train: the run so far is saved in {self.path}; continue it with --resume {self.path}",
                file=sys.stderr,
            )

    def remove(self) -> None:
        """The run is saved: remove the checkpoint, and any a killed run was writing."""
        from ..io.atomic import remove_stale_temporaries

        self.path.unlink(missing_ok=True)
        remove_stale_temporaries(self.path)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """Ctrl-C (SIGINT) or SIGTERM (``timeout``, SLURM, ``docker stop``) ask training to stop like the
    widget's Stop: the step ends and the best model so far is saved. A second signal aborts."""
    received: list[signal.Signals] = []

    def ask_to_stop(number, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(number))
        stop.set()
        print(
            f"\n{received[0].name}: stopping after this step and saving the best model so far "
            "(press Ctrl-C again to abort without saving)",
            file=sys.stderr,
        )

    with signal_handlers(ask_to_stop):
        yield received


def run_demo(args) -> None:
    from ..io import save_model, write_tiff
    from ..prediction.pipeline import predict
    from ..samples.loaders import nuclei_stack
    from ..training.loop import TrainingConfig, fit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = nuclei_stack()
    print(f"training a U-Net on 3 of the 4 nuclei tiles for up to {args.max_minutes:g} minutes; tile 4 is held out")
    config = TrainingConfig(max_minutes=args.max_minutes, device=args.device)
    with Progress(False, "training") as bar:
        model = fit(image[:3], labels[:3], config, callback=bar.training_event)
    save_model(model, out / "model.pt")
    instances = predict(model, image[3], "instances", device=args.device)
    write_tiff(out / "held-out-instances.tif", instances)
    truth = labels[3] > 0
    found = instances > 0
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    print(
        f"held-out tile: {instances.max()} nuclei found ({len(np.unique(labels[3])) - 1} annotated), "
        f"foreground Dice {dice:.3f}"
    )
    print(f"wrote {out / 'model.pt'} and {out / 'held-out-instances.tif'}")
