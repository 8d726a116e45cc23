"""``napari-pix2pix predict`` (one image, a batch into a folder, or a volume on a Dask cluster) and
``export`` (a bioimage.io package)."""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from ..errors import InputError
from ..labels.postprocess import Cleanup
from .common import Progress, check_output


def run_predict(args) -> int:
    from ..io import load_model

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
        check_output(args.out, args.model, args.inputs[0])
        with Progress(args.quiet, "predicting", unit="slice") as bar:
            shape = _predict_file(model, args.inputs[0], args.out, output, cleanup, args, bar)
        print(f"wrote {output} {shape} to {args.out}")
        return 0
    return _predict_batch(model, output, cleanup, args)


def _predict_on_cluster(model, output: str, cleanup: Cleanup, args) -> int:
    """``--workers`` / ``--scheduler``: slabs of the volume predicted by Dask workers into OME-Zarr."""
    from ..io import read_image
    from ..io.atomic import check_writable
    from ..io.omezarr import create_zarr, is_zarr
    from ..prediction.pipeline import output_dtype, output_shape, volume_geometry
    from ..scale.cluster import predict_on_cluster

    if args.out is None or len(args.inputs) != 1 or not is_zarr(args.out):
        raise InputError("--workers and --scheduler predict one volume into OME-Zarr: give --out NAME.zarr")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    check_output(args.out, args.model, args.inputs[0])
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
        Progress(args.quiet, "predicting", geometry.n_slices, "slice") as bar,
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
    from ..io import read_tiff
    from ..io.batch import plan_jobs
    from ..prediction.pipeline import volume_geometry

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
    with Progress(args.quiet, "predicting", total=total, unit="slice") as bar:
        for job in todo:
            try:
                check_output(str(job.target), args.model, str(job.source))
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
    from ..io import read_image, write_tiff
    from ..io.atomic import check_writable
    from ..io.omezarr import create_zarr, is_zarr
    from ..prediction.pipeline import iter_predict, output_dtype, output_shape, volume_geometry

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


def run_export(args) -> int:
    from ..bioimageio import export
    from ..io import load_model, read_image

    if not args.out.lower().endswith(".zip"):
        raise InputError(f"a bioimage.io package is a .zip file; got {args.out}")
    check_output(args.out, args.model, args.image)
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
