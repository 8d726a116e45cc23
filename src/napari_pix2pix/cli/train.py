"""``napari-pix2pix train``: training that survives interruption (signals, checkpoints), alone or under torchrun."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..devices import is_out_of_memory
from ..errors import InputError
from ..scale import distributed
from .common import Progress, check_output, make_folder, signal_handlers, warnings_as_lines

if TYPE_CHECKING:
    from ..models.trained import TrainedModel
    from ..training import Trainer, TrainingConfig
    from ..training.events import TrainingEvent

MODEL_ROOM = 64 * 2**20  # free space asked for before training: far more than a model file takes
#: The options a resumed model fixes: (option, its attribute of the parsed arguments).
RESUMED_OPTIONS = (("--model", "model"), ("--width", "width"), ("--depth", "depth"))


def run_train(args: argparse.Namespace) -> int:
    from ..io import save_model
    from ..training import Trainer

    group = distributed.from_environment()  # set by torchrun; only rank 0 prints and writes
    main_rank = group is None or group.is_main
    # Every rank checks everything before the process group forms, so bad input ends every rank at
    # once (rank 0 says why; main() keeps the others quiet) and no rank waits for one that left.
    arrays, config, resume = _checked_inputs(args, main_rank)
    stop = threading.Event()
    checkpoint = Checkpoint(Path(f"{args.out}.partial"), args.checkpoint_minutes if main_rank else 0)
    finished = False  # every rank ran to the end of the run (so all can meet at the last barrier)
    try:
        with _stop_on_signals(stop) as received, Progress(args.quiet or not main_rank, "training") as bar:
            bar.silent = not main_rank
            fine_tune = bool(getattr(args, "start_from", None))  # a new run from the model's weights
            trainer = Trainer(
                arrays, config, stop=stop, group=group,
                resume=None if fine_tune else resume, start_from=resume if fine_tune else None,
            )  # fmt: skip
            with checkpoint:
                for event in trainer.run():
                    bar.training_event(event)
                    checkpoint.after(event, trainer)
            finished = True
            if main_rank:
                save_model(trainer.model, args.out)
    except RuntimeError as error:
        if group is None or is_out_of_memory(error) or not distributed.is_group_failure(error):
            raise
        first = (str(error).splitlines() or [""])[0][:200]
        print(f"napari-pix2pix train: error: process {group.rank} lost the group ({first}); "
              "another process stopped: see its message", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        distributed.leave(wait=finished)
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


def _checked_inputs(
    args: argparse.Namespace, main_rank: bool
) -> tuple[list[tuple[np.ndarray, np.ndarray]], TrainingConfig, TrainedModel | None]:
    """The training pairs (read), the settings and the model to resume, all checked before any
    training: the options and the model to resume, the pairs' names, the outputs (--out and its
    checkpoint), then the images and labels as they are read."""
    from ..io import read_image, read_tiff
    from ..io.atomic import check_writable
    from ..io.batch import training_pairs

    minutes = args.checkpoint_minutes
    if not (math.isfinite(minutes) and minutes >= 0):
        raise InputError(f"--checkpoint-minutes must be a number of minutes (0: no checkpoints), got {minutes}")
    resume = _base_model(args)
    config = _training_config(args, resume)
    with warnings_as_lines("train", show=main_rank):
        pairs = training_pairs(args.paths)
    check_output(args.out, *(str(p) for pair in pairs for p in pair))  # --out may be the --resume model
    check_writable(args.out, needed_bytes=MODEL_ROOM)  # before training, not after it
    if minutes > 0:
        _check_checkpoint(Path(f"{args.out}.partial"))
    images = [read_image(image) for image, _ in pairs]
    arrays = [(np.asarray(image), read_tiff(labels)) for (image, _), (_, labels) in zip(images, pairs)]
    with warnings_as_lines("train", show=main_rank):
        sizes_from_files(config, [scale for _, scale in images])
    config.check()
    _check_dims(args, config, arrays, resume)
    return arrays, config, resume


def _base_model(args: argparse.Namespace) -> TrainedModel | None:
    """The model a run continues (``--resume``) or fine-tunes (``--start-from``: a new run from its
    weights, its history afresh: ``Trainer(start_from=…)``), or None for a new model."""
    from ..io import load_model
    from ..io.pretrained import load_model_or_pretrained

    if args.resume:
        return load_model(args.resume)
    if getattr(args, "start_from", None):
        return load_model_or_pretrained(args.start_from)
    return None


def _base_words(args: argparse.Namespace) -> tuple[str, str]:
    """How messages name the model a run builds on: (its option, the words for it)."""
    if getattr(args, "start_from", None):
        return "--start-from", "the model to start from"
    return "--resume", "the model to resume"


def sizes_from_files(config: TrainingConfig, scales: list[tuple[float, ...] | None]) -> None:
    """Fill in ``config``'s voxel size (from the stacks' files) and pixel size (the voxel size's y, x,
    else the images' files) where the command line did not give them; the first file's, with a
    warning line when the others differ. A given ``--pixel-size`` is the in-plane size of the voxels too."""
    from ..checks import common_pixel_size, common_voxel_size

    stacks = [scale for scale in scales if scale is not None and len(scale) == 3]
    if config.voxel_size is None and stacks:
        z, y, x = common_voxel_size(stacks) or stacks[0]
        config.voxel_size = (z, *config.pixel_size) if config.pixel_size is not None else (z, y, x)
    if config.pixel_size is None and config.voxel_size is not None:
        config.pixel_size = config.voxel_size[1:]
    elif config.pixel_size is None:
        config.pixel_size = common_pixel_size([tuple(scale[-2:]) if scale else None for scale in scales])


def _check_dims(
    args: argparse.Namespace,
    config: TrainingConfig,
    arrays: list[tuple[np.ndarray, np.ndarray]],
    resume: TrainedModel | None,
) -> None:
    """Refuse a ``--dims`` the images or the model to resume cannot have, before any training (and,
    under torchrun, before the process group forms)."""
    import copy

    from ..training.config import choose_dims
    from ..training.planning import training_dims

    option, words = _base_words(args)
    if resume is not None and args.dims != "auto" and args.dims != f"{resume.config.dims}d":
        raise InputError(
            f"--dims {args.dims} differs from {words} (a {resume.config.dims}D model); leave --dims "
            f"out to train it further, or train a new model without {option}"
        )
    try:
        training_dims(copy.copy(config), arrays, resume)
    except InputError as error:
        if args.dims != "auto":
            raise InputError(f"--dims {args.dims}: {error}") from None
        if resume is not None:
            raise
        _, reason = choose_dims([tuple(np.shape(labels)) for _, labels in arrays], config.voxel_size)
        raise InputError(f"{error} (--dims auto chose {reason}; give --dims 2d or 3d)") from None


def _training_config(args: argparse.Namespace, resume: TrainedModel | None) -> TrainingConfig:
    """The command line's settings, checked; a resumed model fixes the network (``RESUMED_OPTIONS``)."""
    from ..training import TrainingConfig

    if resume is not None:
        base_option, words = _base_words(args)
        resumed = {"model": resume.architecture, "width": resume.config.width, "depth": resume.config.depth}
        for option, name in RESUMED_OPTIONS:
            given = getattr(args, name)
            if given is not None and given != resumed[name]:
                raise InputError(
                    f"{option} {given} differs from {words} ({option} {resumed[name]}); leave "
                    f"{option} out to train it further, or train a new model without {base_option}"
                )
    options = {name: getattr(args, name) for name in ("model", "width", "depth", "boundary_weight")}
    if resume is not None:
        options.update(model=resume.architecture, width=resume.config.width, depth=resume.config.depth)
    config = TrainingConfig(
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
        pixel_size=tuple(args.pixel_size) if args.pixel_size else None,
        dims=args.dims,
        voxel_size=tuple(args.voxel_size) if args.voxel_size else None,
        binning=args.binning,
        **{name: value for name, value in options.items() if value is not None},
    )
    config.check()
    if config.pixel_size is not None and config.voxel_size is not None and config.pixel_size != config.voxel_size[1:]:
        raise InputError(
            f"--pixel-size {' '.join(f'{v:g}' for v in config.pixel_size)} is not the y, x of --voxel-size "
            f"{' '.join(f'{v:g}' for v in config.voxel_size)}; give --voxel-size alone for stacks"
        )
    return config


def _check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint file (``--checkpoint-minutes``) that could not be written, before training."""
    from ..io.atomic import check_writable

    try:
        check_writable(path, needed_bytes=MODEL_ROOM)
    except InputError as error:
        raise InputError(
            f"the checkpoint {path} cannot be written ({error}); move it away, or give --checkpoint-minutes 0"
        ) from None


class Checkpoint:
    """Saves the model being trained to ``path`` every ``minutes`` (at epoch ends), so a run that is
    killed outright (SIGKILL, a power cut) can go on with ``--resume`` and lose minutes, not the run.
    A checkpoint that cannot be saved is a warning line, and the next is tried ``minutes`` later:
    the run goes on to its final save (and, under torchrun, rank 0, the only one saving, stays in
    step with the others). Removed once the final model is saved; if the run fails, the message
    says where it is."""

    def __init__(self, path: Path, minutes: float, warn: Callable[[str], None] | None = None) -> None:
        self.path, self.seconds = path, minutes * 60
        self.last = time.monotonic()
        self.written = False
        self.warn = warn or _warning_line

    def __enter__(self) -> Checkpoint:
        self.last = time.monotonic()
        return self

    def after(self, event: TrainingEvent, trainer: Trainer) -> None:
        from ..io import save_model
        from ..training.events import EventKind

        if self.seconds <= 0 or event.kind != EventKind.EPOCH or time.monotonic() - self.last < self.seconds:
            return
        try:
            save_model(trainer.checkpoint(), self.path)
        except Exception as error:  # a spare copy: failing to write it must not end (or stall) the run
            first = (str(error).splitlines() or [type(error).__name__])[0][:300]
            self.warn(
                f"napari-pix2pix train: warning: the checkpoint {self.path} was not saved ({first}); "
                f"training goes on, next try in {self.seconds / 60:g} minutes"
            )
        else:
            self.written = True
        self.last = time.monotonic()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if kind is not None and self.written and self.path.exists():
            print(
                f"napari-pix2pix train: the run so far is saved in {self.path}; continue it with --resume {self.path}",
                file=sys.stderr,
            )

    def remove(self) -> None:
        """The run is saved: remove the checkpoint, and any a killed run was writing."""
        from ..io.atomic import remove_stale_temporaries

        if self.path.is_file():
            self.path.unlink()
        remove_stale_temporaries(self.path)


def _warning_line(line: str) -> None:
    """Print ``line`` on stderr, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[signal.Signals]]:
    """Ctrl-C (SIGINT) or SIGTERM (``timeout``, SLURM, ``docker stop``) ask training to stop like the
    widget's Stop: the step ends and the best model so far is saved. A second signal aborts."""
    received: list[signal.Signals] = []

    def ask_to_stop(number: int, frame: object) -> None:
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


def run_demo(args: argparse.Namespace) -> None:
    from ..io import save_model, write_tiff
    from ..prediction.pipeline import predict
    from ..samples.loaders import nuclei_stack
    from ..training import TrainingConfig, fit

    out = Path(args.out)
    make_folder(out, "--out")
    image, labels = nuclei_stack()
    print(f"training a U-Net on 3 of the 4 nuclei tiles for up to {args.max_minutes:g} minutes; tile 4 is held out")
    config = TrainingConfig(max_minutes=args.max_minutes, device=args.device)
    with Progress(False, "training") as bar:
        model = fit(image[:3], labels[:3], config, callback=bar.training_event)
    save_model(model, out / "model.pt")
    instances = predict(model, image[3], model.encoding.default_output, device=args.device)  # instances
    write_tiff(out / "held-out-instances.tif", instances)
    truth = labels[3] > 0
    found = instances > 0
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    print(
        f"held-out tile: {instances.max()} nuclei found ({len(np.unique(labels[3])) - 1} annotated), "
        f"foreground Dice {dice:.3f}"
    )
    print(f"wrote {out / 'model.pt'} and {out / 'held-out-instances.tif'}")
