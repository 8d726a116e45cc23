"""Reading and writing TIFF images (the command line's files)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import atomic_write

#: The TIFF Software tag of every file napari-pix2pix writes: a batch replaces only such files.
SOFTWARE = "napari-pix2pix"
#: Micrometres per unit of length, as ImageJ and OME-XML name them (sizes are read in µm, the unit of
#: OME-Zarr's "micrometer" and of most microscopes; a unit not named here gives no size).
MICROMETRES = {
    **dict.fromkeys(("µm", "μm", "\\u00b5m", "um", "micron", "microns", "micrometer", "micrometre"), 1.0),
    **dict.fromkeys(("nm", "nanometer", "nanometre"), 1e-3),
    **dict.fromkeys(("å", "angstrom", "ångström"), 1e-4),
    **dict.fromkeys(("mm", "millimeter", "millimetre"), 1e3),
    **dict.fromkeys(("cm", "centimeter", "centimetre"), 1e4),
    **dict.fromkeys(("m", "meter", "metre"), 1e6),
    **dict.fromkeys(("in", "inch"), 25400.0),
}
TIFF_CENTIMETER = 3  # the ResolutionUnit of a plain TIFF whose resolution is a physical size


#: A TIFF larger than this is read lazily (``read_tiff(lazy=True)``); a smaller one is read whole.
LAZY_TIFF_BYTES = 2**28


def read_tiff(path: str | os.PathLike, lazy: bool = False) -> Any:
    """Read a TIFF file; ``lazy``: a file larger than ``LAZY_TIFF_BYTES`` is opened as a Zarr array
    over its pages (tifffile's Zarr store), so a big volume streams from disk a slab at a time, in
    ordinary file reads: the pages read are not kept in the process's memory, as a memory map's
    would be (they counted in its resident memory up to the file's size). Compressed and tiled
    files stream too; a file the store cannot open is memory-mapped, or read whole."""
    import tifffile

    if Path(path).is_dir():
        raise InputError(f"{path} is a folder, not a TIFF file; give the path of an image file")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        if lazy and Path(path).stat().st_size > LAZY_TIFF_BYTES:
            try:
                return _zarr_of_tiff(path)
            except Exception:  # noqa: BLE001 - any store failure: fall back to a memory map
                try:
                    return tifffile.memmap(path, mode="r")
                except (ValueError, tifffile.TiffFileError, OSError):
                    pass  # compressed or tiled: read it whole instead
        return tifffile.imread(path)
    except Exception as error:  # tifffile raises several types for broken files
        raise InputError(f"{path}: not a readable TIFF image ({type(error).__name__}: {error})") from None


def _zarr_of_tiff(path: str | os.PathLike) -> Any:
    """The first image series of a TIFF as a read-only Zarr array, one chunk per page."""
    import tifffile
    import zarr

    array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if not isinstance(array, zarr.Array):  # a multiscale series opens as a group: its full resolution
        array = array["0"]
    return array


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray | None = None,
    *,
    slices: Iterable[np.ndarray] | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype | None = None,
) -> None:
    """Write ``data``, or an iterator of ``slices`` making an array of ``shape`` and ``dtype``,
    atomically (see ``atomic_write``); slices are written as they come, so a stack need not fit in memory."""
    import tifffile

    with atomic_write(path, suffix=".tmp.tif") as tmp:
        if data is not None:
            tifffile.imwrite(tmp, data, photometric="minisblack", software=SOFTWARE)
        else:
            assert shape is not None and dtype is not None, "slices need a shape and a dtype"
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            # One (Y, X) page at a time, also when each slice has channels (Z, C, Y, X).
            pages = (page for s in slices or () for page in np.asarray(s).reshape(-1, *shape[-2:]))
            tifffile.imwrite(
                tmp,
                data=pages,
                shape=shape,
                dtype=dtype,
                photometric="minisblack",
                bigtiff=nbytes > 2**31,
                software=SOFTWARE,
            )


def written_by_napari_pix2pix(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TIFF this program wrote (its Software tag), so replacing it loses no
    data of the user's (labels named like an output, say)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages) and tif.pages[0].software == SOFTWARE  # type: ignore[union-attr]
    except Exception:  # not a TIFF, or unreadable: not ours
        return False


def tiff_scale(path: str | os.PathLike) -> tuple[float, ...] | None:
    """The physical size of a TIFF's pixels in µm: (y, x) for an image, (z, y, x) for a z-stack,
    None when the file does not give it all (or the file cannot be read).

    Read from ImageJ metadata (the X/YResolution tags in the description's ``unit``, the z step
    ``spacing``, 1 unit when ImageJ left it out as it does for 1), from OME-TIFF's OME-XML
    (PhysicalSizeX/Y/Z and their units, µm by default), or for a plain image from resolution tags in
    centimetres. A plain TIFF's resolution in inches (72 dpi, the default of most writers) or with
    no unit is not a pixel size; neither is an ImageJ file with no unit (calibrated in pixels), a
    time series or a stack of channels.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes.replace("S", "")  # samples (RGB) are channels, not an axis of space
            if tif.is_ome:
                sizes = _ome_sizes(tif.ome_metadata or "")
            elif tif.is_imagej:
                sizes = _imagej_sizes(tif.imagej_metadata or {}, tif.pages[0])
            else:
                sizes = _plain_sizes(tif.pages[0])
    except Exception:  # no size from a file tifffile cannot read (read_tiff says why)
        return None
    if axes not in ("YX", "ZYX") or not all(_plausible(v) for v in sizes[3 - len(axes) :]):
        return None
    return tuple(float(v) for v in sizes[3 - len(axes) :])  # type: ignore[arg-type]


def tiff_voxel_size(path: str | os.PathLike) -> tuple[float, float, float] | None:
    """The (z, y, x) voxel size of a TIFF z-stack in µm (see ``tiff_scale``), None when the file is no
    z-stack or does not give all three."""
    scale = tiff_scale(path)
    return (scale[0], scale[1], scale[2]) if scale is not None and len(scale) == 3 else None


def _plausible(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _micrometres(value: Any, unit: str | None) -> float | None:
    """``value`` in ``unit`` as µm; None when either is missing or the unit is not one of length."""
    factor = MICROMETRES.get((unit or "").strip().lower())
    try:
        return float(value) * factor if factor is not None and value is not None else None
    except (TypeError, ValueError):
        return None


def _per_pixel(resolution: float) -> float | None:
    """Units per pixel from a resolution in pixels per unit."""
    return 1 / resolution if resolution > 0 else None


def _imagej_sizes(metadata: dict, page: Any) -> tuple[float | None, ...]:
    """(z, y, x) in µm from ImageJ's description and resolution tags (None where unknown)."""
    unit = metadata.get("unit")
    if unit is None or str(unit).lower() in ("pixel", "pixels", ""):
        return None, None, None
    x, y = page.resolution
    z = metadata.get("spacing", 1.0)
    return _micrometres(z, unit), _micrometres(_per_pixel(y), unit), _micrometres(_per_pixel(x), unit)


def _ome_sizes(xml: str) -> tuple[float | None, ...]:
    """(z, y, x) in µm from the first image's Pixels element of OME-XML (None where not given)."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None, None
    return tuple(
        _micrometres(pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")) for axis in "ZYX"
    )


def _plain_sizes(page: Any) -> tuple[float | None, ...]:
    """(None, y, x) in µm from a plain TIFF's resolution tags, only when they are in centimetres."""
    if page.resolutionunit != TIFF_CENTIMETER:
        return None, None, None
    x, y = page.resolution
    return None, _micrometres(_per_pixel(y), "cm"), _micrometres(_per_pixel(x), "cm")
