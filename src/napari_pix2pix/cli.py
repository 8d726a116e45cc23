"""The command line: ``napari-pix2pix train`` / ``predict`` / ``demo``, the headless face of the engine.

Bad input ends with exit status 2 and one line saying what is wrong; outputs are written to a
temporary file and renamed, so a failed or interrupted run leaves no partial file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import distributed
from .devices import DEVICES
from .encodings import ANNOTATION_CHOICES, AUTO
from .errors import InputError
from .models import ARCHITECTURES
from .outputs import OUTPUTS
from .postprocess import Cleanup
from .prediction import AUTO_SIZE, DEFAULT_TTA
from .training import NORMALISATIONS

EXIT_BAD_INPUT = 2
MODEL_ROOM = 64 * 2**20  # free space asked for before training: far more than a model file takes


def _object_size(text: str) -> float | str | None:
    if text.lower() in ("auto", "none"):
        return AUTO_SIZE if text.lower() == "auto" else None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a number of pixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the object size must be positive, got {text}")
    return value


def _architecture_help() -> str:
    lines = [
        f"{name} ({spec.label}; patch {spec.patch_size}, learning rate {spec.learning_rate:g})"
        for name, spec in ARCHITECTURES.items()
    ]
    return "network: " + "; ".join(lines) + " (default: unet)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-pix2pix",
        description="Train a U-Net or pix2pix network on annotated images and predict labels (TIFF in, TIFF out).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _add_train_command(commands)
    _add_predict_command(commands)
    _add_export_command(commands)
    gui = commands.add_parser("gui", help="open napari with the Train and Predict widgets and a sample")
    gui.add_argument(
        "--sample",
        choices=["nuclei", "membranes", "none"],
        default="nuclei",
        help="sample data to open (default: nuclei)",
    )

    demo = commands.add_parser("demo", help="train on the bundled nuclei sample and predict, headless")
    demo.add_argument("--out", default="demo-output", help="folder for the model and labels (default: demo-output)")
    demo.add_argument("--max-minutes", type=float, default=3.0)
    demo.add_argument("--device", choices=DEVICES, default="auto")
    return parser


def _add_train_command(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model on images and their labels",
        description="Train on IMAGE LABELS [IMAGE LABELS ...] (pairs of TIFF files), or on IMAGES_DIR LABELS_DIR "
        "(two folders; labels matched to images by file name, also as NAME_labels.tif). Images may differ in "
        "size and slice count; each is normalised by its own intensity percentiles.",
    )
    train.add_argument(
        "paths",
        nargs="+",
        metavar="IMAGE LABELS",
        help="TIFF image ((Y,X) or (Z,Y,X), optionally channels last) then TIFF integer labels of the same "
        "shape (0 = background, or not annotated); several pairs, or two folders",
    )
    train.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    train.add_argument("--model", choices=list(ARCHITECTURES), default="unet", help=_architecture_help())
    train.add_argument(
        "--annotation",
        choices=ANNOTATION_CHOICES,
        default=AUTO,
        help="how to read the labels: dense classes, sparse scribbles (0 = not annotated), "
        "or instances (default: auto)",
    )
    train.add_argument(
        "--max-minutes",
        type=float,
        default=10.0,
        help="time budget: training runs until it, the learning rate decaying to its end (default: 10)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="optional extra limit: stop after N epochs (default: until the time budget)",
    )
    train.add_argument("--steps-per-epoch", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--patch-size", type=int, default=None, help="training patch side (default: the network's)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the network's)")
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--width", type=int, default=None, help="channels of the first layer (default: 16)")
    train.add_argument("--depth", type=int, default=None, help="number of pooling levels (default: 4)")
    train.add_argument("--no-augment", action="store_true", help="turn data augmentation off")
    train.add_argument(
        "--pixel-size",
        type=float,
        nargs=2,
        metavar=("Y", "X"),
        help="physical size of the images' pixels (e.g. in µm), stored in the model so that images with other "
        "pixels can be rescaled to it (default: the OME-Zarr voxel size, else unknown)",
    )
    train.add_argument(
        "--normalise",
        choices=list(NORMALISATIONS),
        default="dataset",
        help="intensity scaling: 'dataset' (the training images' 1st-99.8th percentiles, for every image; "
        "default) or 'per-image' (each image by its own, for data whose brightness varies between images)",
    )
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", metavar="MODEL", help="continue training this model file (or a .partial checkpoint)")
    train.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=5.0,
        metavar="MINUTES",
        help="save the run so far to OUT.partial this often, for --resume after a crash (0: never; default: 5)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_cluster_options(predict) -> None:
    cluster = predict.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="predict on a local Dask cluster of N processes, slab by slab, into --out NAME.zarr",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="predict on a running Dask cluster (e.g. tcp://host:8786, started by dask-jobqueue on SLURM); "
        "the model, input and output must be on a file system its workers share",
    )


def _add_export_command(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export a model as a bioimage.io package (ilastik, deepImageJ, QuPath, Fiji, bioimageio.core)",
        description="Write MODEL as a bioimage.io model package (.zip, spec 0.5): PyTorch state dict and "
        "TorchScript weights, the intensity scaling as preprocessing, softmax as postprocessing, and a test "
        "tile from IMAGE with the engine's output for it. Needs bioimageio.spec (the 'bioimageio' extra).",
    )
    export.add_argument("model", help="model file written by 'train'")
    export.add_argument("out", help="package to write (.zip)")
    export.add_argument(
        "--image", required=True, help="TIFF or OME-Zarr image whose middle tile becomes the test input"
    )
    export.add_argument("--name", default="napari-pix2pix model")
    export.add_argument("--description", default="A segmentation network trained with napari-pix2pix.")
    export.add_argument("--author", action="append", help="an author's name (repeat for several)")
    export.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id (default: CC-BY-4.0)")
    export.add_argument(
        "--cite", nargs=2, action="append", metavar=("TEXT", "DOI"), help="a reference (repeat for several)"
    )


def run_export(args) -> int:
    from .bioimageio import export
    from .io import load_model, read_image

    if not args.out.lower().endswith(".zip"):
        raise InputError(f"a bioimage.io package is a .zip file; got {args.out}")
    _check_output(args.out, args.model, args.image)
    model = load_model(args.model)
    image, _ = read_image(args.image)
    options = dict(name=args.name, description=args.description, license=args.license)
    if args.author:
        options["authors"] = tuple(args.author)
    if args.cite:
        options["cite"] = tuple(tuple(c) for c in args.cite)
    export(model, args.out, np.asarray(image), **options)
    print(f"exported {model.describe()} to {args.out} (bioimage.io model, spec 0.5)")
    return 0


def _add_pixel_size_options(predict) -> None:
    predict.add_argument(
        "--pixel-size",
        type=float,
        nargs=2,
        metavar=("Y", "X"),
        help="physical size of the image's pixels (default: the OME-Zarr voxel size, else unknown); a warning "
        "says when it differs from the model's",
    )
    predict.add_argument(
        "--match-pixel-size",
        action="store_true",
        help="rescale the image to the model's pixel size (when both are known) instead of by object size",
    )


def _add_predict_command(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict labels for an image or stack, or for many (--out-dir)",
        description="Predict one image into --out FILE, or many (files, folders of TIFFs, glob patterns) into "
        "--out-dir FOLDER, one output per input named <input>_<output>.tif. In a batch, inputs whose output "
        "exists are skipped (--overwrite to redo them), a file that fails is reported and the rest go on, and "
        "the exit status is 1 if any failed.",
    )
    predict.add_argument("model", help="model file written by 'train'")
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="TIFF or OME-Zarr (.zarr) image or stack; with --out-dir also folders and globs",
    )
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", help="file to write (one input): TIFF, or OME-Zarr for a name ending in .zarr (written slice by slice)"
    )
    where.add_argument("--out-dir", type=Path, metavar="FOLDER", help="folder for the outputs of many inputs")
    predict.add_argument("--overwrite", action="store_true", help="with --out-dir: redo inputs whose output exists")
    _add_cluster_options(predict)
    predict.add_argument(
        "--output",
        choices=list(OUTPUTS),
        default=None,
        help="; ".join(f"{name}: {kind.label.lower()}" for name, kind in OUTPUTS.items())
        + " (default: instances for a model trained on instance labels, else labels)",
    )
    predict.add_argument(
        "--no-link-slices",
        action="store_true",
        help="instances: number each slice's objects separately instead of following "
        "objects from slice to slice (for time series rather than z-stacks)",
    )
    predict.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_TTA,
        help="test-time augmentation: average the 8 flips and turns of each tile (8x the work; "
        f"default: {'on' if DEFAULT_TTA else 'off'})",
    )
    predict.add_argument(
        "--separate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw watershed lines between touching objects, so a faint membrane still separates two cells "
        "(labels and instances of class models; default: on)",
    )
    predict.add_argument(
        "--object-size",
        type=_object_size,
        default=AUTO_SIZE,
        metavar="auto|none|PIXELS",
        help="typical diameter of the objects in this image: the image is rescaled to the size the model was "
        "trained on ('auto': estimated; 'none': predict at the image's own scale; default: auto)",
    )
    predict.add_argument("--min-size", type=int, default=0, help="remove objects smaller than this many pixels")
    predict.add_argument("--fill-holes", type=int, default=0, metavar="PIXELS", help="fill holes up to this size")
    _add_pixel_size_options(predict)
    predict.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        metavar="P",
        help="object probability from which a pixel is part of an object (default 0.5: the likeliest class)",
    )
    predict.add_argument("--tile-size", type=int, default=None)
    predict.add_argument("--overlap", type=int, default=None)
    predict.add_argument(
        "--batch-size", type=int, default=None, help="tiles per forward pass (default: 4 on the CPU, 16 on a GPU)"
    )
    predict.add_argument("--device", choices=DEVICES, default="auto")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args) -> int:
    from .batch import training_pairs
    from .io import load_model, read_image, read_tiff, save_model
    from .io.atomic import check_writable
    from .training import Trainer, TrainingConfig

    group = distributed.from_environment()  # set by torchrun; only rank 0 prints and writes
    main_rank = group is None or group.is_main
    pairs = training_pairs(args.paths)
    if main_rank:
        _check_output(args.out, *(str(p) for pair in pairs for p in pair))  # --out may be the --resume model
        check_writable(args.out, needed_bytes=MODEL_ROOM)  # before training, not after it
    images = [read_image(image) for image, _ in pairs]
    arrays = [(np.asarray(image), read_tiff(labels)) for (image, _), (_, labels) in zip(images, pairs)]
    pixel_size = args.pixel_size or next((tuple(scale[-2:]) for _, scale in images if scale), None)
    resume = load_model(args.resume) if args.resume else None
    settings = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
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
        with _stop_on_signals(stop) as received, _progress(args.quiet or not main_rank, "training") as bar:
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
        from .io import save_model
        from .training import EventKind

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
        from .io.atomic import remove_stale_temporaries

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

    with _handlers(ask_to_stop):
        yield received


@contextlib.contextmanager
def _handlers(handler, signals=(signal.SIGINT, signal.SIGTERM)):
    """Install ``handler`` for ``signals`` (main thread only), restoring the old ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class Terminated(BaseException):
    """SIGTERM, raised as an exception so that files being written are cleaned up on the way out."""


def _terminate(number, frame):
    raise Terminated


def run_predict(args) -> int:
    from .io import load_model

    if args.out is not None and len(args.inputs) != 1:
        raise InputError(f"--out takes one input, {len(args.inputs)} were given; use --out-dir FOLDER for several")
    cleanup = Cleanup(
        separate=args.separate, min_size=args.min_size, max_hole=args.fill_holes, threshold=args.threshold
    )
    model = load_model(args.model)
    output = args.output or model.encoding.default_output
    if args.workers or args.scheduler:
        return _predict_on_cluster(model, output, cleanup, args)
    if args.out is not None:
        _check_output(args.out, args.model, args.inputs[0])
        with _progress(args.quiet, "predicting", unit="slice") as bar:
            shape = _predict_file(model, args.inputs[0], args.out, output, cleanup, args, bar)
        print(f"wrote {output} {shape} to {args.out}")
        return 0
    return _predict_batch(model, output, cleanup, args)


def _predict_on_cluster(model, output: str, cleanup: Cleanup, args) -> int:
    """``--workers`` / ``--scheduler``: slabs of the volume predicted by Dask workers into OME-Zarr."""
    from .cluster import predict_on_cluster
    from .io import read_image
    from .io.atomic import check_writable
    from .io.omezarr import create_zarr, is_zarr
    from .prediction import output_dtype, output_shape, volume_geometry

    if args.out is None or len(args.inputs) != 1 or not is_zarr(args.out):
        raise InputError("--workers and --scheduler predict one volume into OME-Zarr: give --out NAME.zarr")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    _check_output(args.out, args.model, args.inputs[0])
    image, scale = read_image(args.inputs[0])
    geometry = volume_geometry(image.shape, model.config.in_channels)
    dtype, shape = output_dtype(model, output), output_shape(model, output, geometry)
    check_writable(args.out, needed_bytes=int(np.prod(shape)) * dtype.itemsize)
    options = dict(
        tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        tta=args.tta, link_slices=not args.no_link_slices, cleanup=cleanup, object_size=args.object_size,
    )  # fmt: skip
    with (
        _dask_client(args) as client,
        _progress(args.quiet, "predicting", geometry.n_slices, "slice") as bar,
        create_zarr(args.out, shape, dtype, scale=scale, channel_axis=-3 if len(shape) > 3 else None) as array,
    ):
        predict_on_cluster(client, args.model, args.inputs[0], array, output, options, bar.bar.update)
    where = f"the scheduler at {args.scheduler}" if args.scheduler else f"{args.workers} local worker(s)"
    print(f"wrote {output} {shape} to {args.out} with {where}")
    return 0


@contextlib.contextmanager
def _dask_client(args):
    """A client of the scheduler at ``--scheduler``, or of a local cluster of ``--workers`` processes."""
    import logging
    import os

    from distributed import Client, LocalCluster

    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as error:
            raise InputError(f"cannot reach the Dask scheduler at {args.scheduler}: {error}") from None
        with client:
            yield client
        return
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR, env={"OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    with cluster, Client(cluster) as client:
        yield client


def _predict_batch(model, output: str, cleanup: Cleanup, args) -> int:
    """Every input into ``--out-dir``: skips done ones, reports failures and goes on; 1 if any failed."""
    from .batch import plan_jobs
    from .io import read_tiff
    from .prediction import volume_geometry

    jobs = plan_jobs(args.inputs, args.out_dir, output)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if args.overwrite or not job.target.exists()]
    skipped, failed = len(jobs) - len(todo), []
    total = 0
    for job in todo:  # the bar counts slices over all inputs; a file that cannot be read counts one
        try:
            total += volume_geometry(read_tiff(job.source, lazy=True).shape, model.config.in_channels).n_slices
        except InputError:
            total += 1
    with _progress(args.quiet, "predicting", total=total, unit="slice") as bar:
        for job in todo:
            try:
                _check_output(str(job.target), args.model, str(job.source))
                _predict_file(model, job.source, job.target, output, cleanup, args, bar)
            except InputError as error:
                failed.append(job.source)
                bar.bar.write(f"napari-pix2pix predict: {job.source}: error: {error}", file=sys.stderr)
    done = len(todo) - len(failed)
    print(
        f"predicted {done}, skipped {skipped} (output already there; --overwrite to redo), failed {len(failed)}, "
        f"of {len(jobs)} input(s); outputs in {args.out_dir}"
    )
    return 1 if failed else 0


def _predict_file(model, source, target, output: str, cleanup: Cleanup, args, bar) -> tuple[int, ...]:
    """Predict one TIFF or OME-Zarr image into ``target`` (a TIFF, or an OME-Zarr image for a name
    ending in .zarr; written atomically, slice by slice); returns the output's shape."""
    from .io import read_image, write_tiff
    from .io.atomic import check_writable
    from .io.omezarr import create_zarr, is_zarr
    from .prediction import iter_predict, output_dtype, output_shape, volume_geometry

    image, scale = read_image(source)
    geometry = volume_geometry(image.shape, model.config.in_channels)
    shape = output_shape(model, output, geometry)
    needed = int(np.prod(shape)) * output_dtype(model, output).itemsize
    check_writable(target, needed_bytes=needed)
    results = iter_predict(
        model,
        image,
        output,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        link_slices=not args.no_link_slices,
        tta=args.tta,
        cleanup=cleanup,
        object_size=args.object_size,
        pixel_size=args.pixel_size or (tuple(scale[-2:]) if scale else None),
        match_pixel_size=args.match_pixel_size,
    )
    if bar.bar.total is None:
        bar.bar.total = geometry.n_slices
    slices = (bar.advance(r).data for r in _warning_lines(results, bar))
    dtype = output_dtype(model, output)
    if is_zarr(target):
        channel_axis = -3 if len(shape) > len(geometry.spatial_shape) else None
        with create_zarr(target, shape, dtype, scale=scale, channel_axis=channel_axis) as array:
            for index, data in enumerate(slices):
                array[index if geometry.is_stack else ...] = data
    elif geometry.is_stack:
        write_tiff(target, slices=slices, shape=shape, dtype=dtype)
    else:
        write_tiff(target, next(slices))
    return shape


def _warning_lines(results, bar):
    """Pass ``results`` on, printing the engine's warnings (e.g. another pixel size) as one line each."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for result in results:
            for warning in caught:
                bar.bar.write(f"napari-pix2pix predict: warning: {warning.message}", file=sys.stderr)
            caught.clear()
            yield result


def _check_output(out: str, *inputs: str | None) -> None:
    """Refuse an output that would replace one of the inputs, or that is not a regular file."""
    from .io.atomic import check_name

    check_name(Path(out))
    target = Path(out).resolve()
    for given in filter(None, inputs):
        if Path(given).resolve() == target:
            raise InputError(f"--out {out} is also an input; choose another file name so the input is kept")
    if target.exists() and not target.is_file() and not out.rstrip("/").lower().endswith(".zarr"):
        raise InputError(f"--out {out} is not a regular file; give the path of a file to write")


def run_gui(args) -> None:
    from ._launch import main as launch

    status = launch(None if args.sample == "none" else args.sample)
    if status:
        raise SystemExit(status)


def run_demo(args) -> None:
    from .io import save_model, write_tiff
    from .prediction import predict
    from .samples import nuclei_stack
    from .training import TrainingConfig, fit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = nuclei_stack()
    print(f"training a U-Net on 3 of the 4 nuclei tiles for up to {args.max_minutes:g} minutes; tile 4 is held out")
    config = TrainingConfig(max_minutes=args.max_minutes, device=args.device)
    with _progress(False, "training") as bar:
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


class _progress:
    """A tqdm progress bar on stderr that understands training events and prediction slices."""

    def __init__(self, quiet: bool, description: str, total: int | None = None, unit: str = "step"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.silent = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def training_event(self, event) -> None:
        from .training import EventKind

        if self.silent:
            return
        if event.kind == EventKind.START:
            self.bar.total = 100
            self.bar.unit = "%"
            self.bar.write(event.message, file=sys.stderr)
        elif event.kind == EventKind.STEP:
            self.bar.update(int(event.progress * 100) - self.bar.n)
            self.bar.set_postfix(step=event.step, epoch=event.epoch, loss=f"{event.loss:.4f}", refresh=False)
        elif event.kind == EventKind.EPOCH and event.val_dice is not None:
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}", val_dice=f"{event.val_dice:.3f}")
        elif event.kind == EventKind.FINISHED:
            self.bar.write(event.message, file=sys.stderr)

    def advance(self, result):
        self.bar.update(1)
        return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": run_train, "predict": run_predict, "export": run_export, "demo": run_demo, "gui": run_gui}
    command = commands[args.command]
    try:
        with _handlers(_terminate, (signal.SIGTERM,)) if args.command != "gui" else contextlib.nullcontext():
            return command(args) or 0
    except InputError as error:
        print(f"napari-pix2pix {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print(
            f"napari-pix2pix {args.command}: error: out of memory; use a smaller --batch-size or "
            "--tile-size / --patch-size",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except RuntimeError as error:
        if "out of memory" not in str(error) and "can't allocate memory" not in str(error):
            raise
        print(
            f"napari-pix2pix {args.command}: error: the device ran out of memory; use a smaller "
            "--batch-size or --tile-size / --patch-size, or --device cpu",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as interruption:
        name = "stopped by SIGTERM" if isinstance(interruption, Terminated) else "interrupted"
        print(f"napari-pix2pix {args.command}: {name}; the output was not written", file=sys.stderr)
        return 143 if isinstance(interruption, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
