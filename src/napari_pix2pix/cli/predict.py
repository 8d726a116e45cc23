"""``napari-pix2pix predict`` (one image, a batch into a folder, or a volume on a Dask cluster) and
``export`` (a bioimage.io package)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..labels.postprocess import Cleanup
from ..prediction.settings import PredictionSettings
from .common import Progress, Terminated, check_output, make_folder, warnings_as_lines

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from distributed import Client

    from ..io.batch import Job
    from ..models.trained import TrainedModel


def prediction_settings(args: argparse.Namespace, model: TrainedModel) -> PredictionSettings:
    """The command line's prediction options as one ``PredictionSettings`` (checked once, here)."""
    cleanup = Cleanup(
        separate=args.separate, min_size=args.min_size, max_hole=args.fill_holes, threshold=args.threshold
    )
    voxel_size = tuple(args.voxel_size) if args.voxel_size else None
    pixel_size = tuple(args.pixel_size) if args.pixel_size else voxel_size[1:] if voxel_size else None
    return PredictionSettings(
        output=args.output or model.encoding.default_output,
        tta=args.tta,
        object_size=args.object_size,
        cleanup=cleanup,
        link_slices=not args.no_link_slices,
        pixel_size=pixel_size,
        match_pixel_size=args.match_pixel_size,
        voxel_size=voxel_size,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
    )


def run_predict(args: argparse.Namespace) -> int:
    from ..io.pretrained import load_model_or_pretrained

    if args.out is not None and len(args.inputs) != 1:
        raise InputError(f"--out takes one input, {len(args.inputs)} were given; use --out-dir FOLDER for several")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    model = load_model_or_pretrained(args.model)
    settings = prediction_settings(args, model)
    if args.workers is not None or args.scheduler:
        return _predict_on_cluster(model, settings, args)
    if args.out is not None:
        check_output(args.out, args.model, args.inputs[0])
        with Progress(args.quiet, "predicting", unit="slice") as bar:
            shape = _predict_file(model, args.inputs[0], args.out, settings, bar)
        print(f"wrote {settings.output} {shape} to {args.out}")
        return 0
    return _predict_batch(model, settings, args)


def _predict_on_cluster(model: TrainedModel, settings: PredictionSettings, args: argparse.Namespace) -> int:
    """``--workers`` / ``--scheduler``: slabs of the volume predicted by Dask workers into OME-Zarr."""
    from ..io import read_image
    from ..io.atomic import check_writable
    from ..io.omezarr import create_zarr, is_zarr
    from ..prediction.pipeline import output_dtype, output_shape
    from ..prediction.reading import volume_geometry
    from ..scale.cluster import predict_on_cluster

    if args.out is None or len(args.inputs) != 1 or not is_zarr(args.out):
        raise InputError("--workers and --scheduler predict one volume into OME-Zarr: give --out NAME.zarr")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    check_output(args.out, args.model, args.inputs[0])
    image, scale = read_image(args.inputs[0])
    settings = _with_file_scale(settings, scale)
    geometry = volume_geometry(image.shape, model)
    output = settings.output_for(model)
    dtype, shape = output_dtype(model, output), output_shape(model, output, geometry)
    check_writable(args.out, needed_bytes=int(np.prod(shape)) * dtype.itemsize)
    # The output outermost: after a failure the client (and a local cluster's workers) is gone before
    # the unfinished store is removed (predict_on_cluster also waits for every task to stop writing).
    with (
        create_zarr(args.out, shape, dtype, scale=scale, channel_axis=-3 if len(shape) > 3 else None) as array,
        _dask_client(args) as client,
        Progress(args.quiet, "predicting", geometry.n_slices, "slice") as bar,
        warnings_as_lines("predict"),
    ):
        predict_on_cluster(client, args.model, args.inputs[0], array, settings, bar.bar.update)
    where = f"the scheduler at {args.scheduler}" if args.scheduler else f"{args.workers} local worker(s)"
    print(f"wrote {output} {shape} to {args.out} with {where}")
    return 0


def _with_file_scale(settings: PredictionSettings, scale: Sequence[float] | None) -> PredictionSettings:
    """``settings`` with the image file's own pixel size, and a stack's voxel size, where
    ``--pixel-size`` and ``--voxel-size`` did not give them."""
    if not scale:
        return settings
    if settings.pixel_size is None:
        settings = replace(settings, pixel_size=(float(scale[-2]), float(scale[-1])))
    if settings.voxel_size is None and len(scale) == 3:
        settings = replace(settings, voxel_size=(float(scale[0]), float(scale[1]), float(scale[2])))
    return settings


@contextlib.contextmanager
def _dask_client(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the scheduler at ``--scheduler`` once it has a worker (waiting at most
    ``scale.cluster.WORKER_WAIT_S``), or of a local cluster of ``--workers`` processes. Dask's
    scheduler setting is what it was afterwards, also when the client failed to start: a client
    that fails to connect can leave ``scheduler="dask.distributed"`` set, and every later dask
    computation in the process (a napari layer's, say) would ask for a client that is gone."""
    import dask

    with dask.config.set(scheduler=dask.config.get("scheduler", None)):
        yield from _clients(args)


def _clients(args: argparse.Namespace) -> Iterator[Client]:
    """``_dask_client``'s body: the client, and its cluster when local."""
    import logging
    import os

    from distributed import Client, LocalCluster

    from ..scale import cluster

    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout="20s")
        except ValueError as error:  # not an address: no port, or a scheme such as http://
            raise InputError(
                f"--scheduler {args.scheduler} is not a Dask scheduler address ({error}); give one like tcp://HOST:8786"
            ) from None
        except OSError as error:
            raise InputError(f"cannot reach the Dask scheduler at {args.scheduler}: {error}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=cluster.WORKER_WAIT_S)
            except OSError:  # a TimeoutError: no worker came
                raise InputError(
                    f"the Dask scheduler at {args.scheduler} has no workers (none came in "
                    f"{cluster.WORKER_WAIT_S:g} s); start some, or use --workers N"
                ) from None
            yield client
        return
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    local = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR, env={"OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    with local, Client(local) as client:
        yield client


def _predict_batch(model: TrainedModel, settings: PredictionSettings, args: argparse.Namespace) -> int:
    """Every input into ``--out-dir``: skips done ones, reports failures and goes on; 1 if any failed.
    Ctrl-C or SIGTERM ends the batch with the summary of what was done (130 or 143)."""
    from ..io.batch import plan_jobs
    from ..io.tiff import written_by_napari_pix2pix

    plan = plan_jobs(args.inputs, args.out_dir, settings.output_for(model))
    make_folder(args.out_dir, "--out-dir")
    jobs = plan.jobs
    # A file named like an output that napari-pix2pix did not write (the user's labels, say) is kept.
    foreign = [job for job in jobs if job.target.exists() and not written_by_napari_pix2pix(job.target)]
    todo = [job for job in jobs if job not in foreign and (args.overwrite or not job.target.exists())]
    skipped, failed, done = len(jobs) - len(todo) - len(foreign), [job.source for job in foreign], 0
    stopped: BaseException | None = None
    with Progress(args.quiet, "predicting", total=_slices_of(model, todo), unit="slice") as bar:
        for job in foreign:
            bar.bar.write(
                f"napari-pix2pix predict: {job.source}: error: its output name {job.target} is taken by a file "
                "napari-pix2pix did not write (labels of yours?); it is kept: choose another --out-dir",
                file=sys.stderr,
            )
        try:
            for job in todo:
                try:
                    check_output(str(job.target), args.model, str(job.source))
                    _predict_file(model, job.source, job.target, settings, bar)
                    done += 1
                except InputError as error:
                    failed.append(job.source)
                    bar.bar.write(f"napari-pix2pix predict: {job.source}: error: {error}", file=sys.stderr)
        except (KeyboardInterrupt, Terminated) as interruption:
            stopped = interruption
    left = len(todo) - done - len(failed)
    earlier = f"; {plan.earlier_outputs} earlier output(s) in {args.out_dir} not taken as inputs"
    print(
        f"predicted {done}, skipped {skipped} (output already there; --overwrite to redo), failed {len(failed)}, "
        + (f"not done {left} (stopped), " if stopped is not None else "")
        + f"of {len(jobs)} input(s){earlier if plan.earlier_outputs else ''}; outputs in {args.out_dir}"
    )
    if stopped is not None:
        name = "stopped by SIGTERM" if isinstance(stopped, Terminated) else "interrupted"
        print(
            f"napari-pix2pix predict: {name}; {done} output(s) written, {left} not (the one being written is not kept)",
            file=sys.stderr,
        )
        return 143 if isinstance(stopped, Terminated) else 130
    return 1 if failed else 0


def _slices_of(model: TrainedModel, jobs: list[Job]) -> int:
    """The slices to predict, for the progress bar; a file that cannot be read counts one."""
    from ..io import read_tiff
    from ..prediction.reading import volume_geometry

    total = 0
    for job in jobs:
        try:
            total += volume_geometry(read_tiff(job.source, lazy=True).shape, model).n_slices
        except InputError:
            total += 1
    return total


def _predict_file(
    model: TrainedModel, source: str | Path, target: str | Path, settings: PredictionSettings, bar: Progress
) -> tuple[int, ...]:
    """Predict one TIFF or OME-Zarr image into ``target`` (a TIFF, or an OME-Zarr image for a name
    ending in .zarr; written atomically, slice by slice); returns the output's shape."""
    from ..io import read_image
    from ..io.atomic import check_writable
    from ..prediction.pipeline import iter_predict, output_dtype, output_shape, write_prediction
    from ..prediction.reading import volume_geometry
    from ..prediction.sinks import file_sink

    image, scale = read_image(source)
    settings = _with_file_scale(settings, scale)
    geometry = volume_geometry(image.shape, model)
    output = settings.output_for(model)
    shape, dtype = output_shape(model, output, geometry), output_dtype(model, output)
    check_writable(target, needed_bytes=int(np.prod(shape)) * dtype.itemsize)
    if bar.bar.total is None:
        bar.bar.total = geometry.n_slices
    sink = file_sink(target, shape, dtype, geometry.is_stack, scale=scale)
    with warnings_as_lines("predict"):
        write_prediction(iter_predict(model, image, settings=settings), sink, on_slice=bar.advance)
    return shape


def run_export(args: argparse.Namespace) -> int:
    from ..bioimageio import export
    from ..io import read_image
    from ..io.pretrained import load_model_or_pretrained

    if not args.out.lower().endswith(".zip"):
        raise InputError(f"a bioimage.io package is a .zip file; got {args.out}")
    check_output(args.out, args.model, args.image)
    model = load_model_or_pretrained(args.model)
    image, _ = read_image(args.image)
    options = dict(name=args.name, description=args.description, license=args.license)
    if args.author:
        options["authors"] = tuple(args.author)
    if args.cite:
        options["cite"] = tuple(tuple(c) for c in args.cite)
    export(model, args.out, np.asarray(image), **options)
    print(f"exported {model.describe()} to {args.out} (bioimage.io model, spec 0.5)")
    return 0
