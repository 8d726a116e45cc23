"""OME-Zarr (OME-NGFF 0.4) images in and out, slice by slice, for volumes larger than memory.

Reading opens the first (full-resolution) dataset of an OME-Zarr image lazily, with its voxel size;
a plain Zarr array is read too. Writing creates an OME-NGFF 0.4 image (Zarr format 2, the version
napari-ome-zarr, Fiji/MoBIE and bioimage tools read) with one chunk per slice, in a hidden folder
beside the target that is renamed into place when complete, so a failed or interrupted run leaves
no partial output and keeps an older one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import check_target_folder, remove_stale_temporaries

NGFF_VERSION = "0.4"


def is_zarr(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/").lower().endswith(".zarr")


def read_zarr(path: str | os.PathLike):
    """The full-resolution array of an OME-Zarr image (or a plain Zarr array), opened lazily, and
    its voxel size (one number per axis, None when the file gives none)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises several types for what is not a Zarr store
        raise InputError(f"{path}: not a readable Zarr store ({type(error).__name__}: {error})") from None
    if isinstance(node, zarr.Array):
        return node, None
    attrs: dict[str, Any] = dict(node.attrs.asdict())
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        dataset = multiscales[0]["datasets"][0]
        transforms = dataset.get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
        return node[dataset["path"]], (tuple(float(v) for v in scale) if scale else None)
    except (TypeError, KeyError, IndexError, ValueError):
        raise InputError(
            f"{path} is a Zarr group but not an OME-Zarr image (no usable 'multiscales' metadata)"
        ) from None


def _axes(ndim: int, channel_axis: int | None) -> list[dict]:
    """NGFF axes: (z,) y, x, with a channel axis "c" at ``channel_axis``."""
    names = ["z", "y", "x"][-(ndim - (channel_axis is not None)) :]
    axes: list[dict] = [{"name": name, "type": "space"} for name in names]
    if channel_axis is not None:
        axes.insert(channel_axis % ndim, {"name": "c", "type": "channel"})
    return axes


@contextlib.contextmanager
def create_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype,
    scale: Sequence[float] | None = None,
    channel_axis: int | None = None,
) -> Iterator:
    """Yield a writable Zarr array of ``shape`` (one chunk per slice) inside a new OME-Zarr image;
    the image appears at ``path`` only once the block ends without error."""
    import zarr

    target = Path(path)
    check_target_folder(target)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:80]}.{os.getpid()}.", suffix=".tmp.zarr", dir=target.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        chunks = (1, *shape[1:]) if len(shape) >= 3 else tuple(shape)
        array = group.create_array("0", shape=tuple(shape), chunks=chunks, dtype=np.dtype(dtype), fill_value=0)
        axes = _axes(len(shape), channel_axis)
        spatial = [a for a in axes if a["type"] == "space"]
        given = list(scale)[-len(spatial) :] if scale is not None else [1.0] * len(spatial)
        scales = iter(given)
        full_scale = [1.0 if a["type"] == "channel" else next(scales) for a in axes]
        group.attrs["multiscales"] = [
            {
                "version": NGFF_VERSION,
                "name": target.stem,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": full_scale}]}],
            }
        ]
        yield array
        if target.exists():
            old = target.with_name(f".{target.name[:80]}.{os.getpid()}.old.tmp.zarr")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
