"""Many images in one command: which files an input list names, and where each one's output goes.

``napari-pix2pix predict MODEL INPUT [INPUT ...] --out-dir DIR`` takes files, folders (their TIFF
files, sorted by name) and glob patterns (for shells that do not expand them); each input gets one
output in DIR named after it, ``<name>_<output>.tif``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
    )


def expand_inputs(inputs: list[str]) -> list[Path]:
    """The files ``inputs`` name, in order, each once; ``InputError`` for a name that matches nothing."""
    found: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = _tiffs_in(path)
            if not files:
                raise InputError(f"the folder {given} holds no TIFF files (.tif, .tiff)")
        elif path.exists():
            files = [path]
        elif glob.has_magic(given):
            files = sorted(Path(p) for p in glob.glob(given) if Path(p).is_file())
            if not files:
                raise InputError(f"no file matches {given}")
        else:
            raise InputError(f"{given}: no such file or folder")
        found += [f for f in files if f not in found]
    return found


LABEL_SUFFIXES = ("", "_labels", "-labels", "_label", "_masks", "_mask")


def training_pairs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(image, labels) files from ``IMAGE LABELS [IMAGE LABELS ...]`` or ``IMAGES_DIR LABELS_DIR``.

    In folders, an image's labels are the TIFF of the same name in the labels folder, or of its name
    with ``_labels`` (``-labels``, ``_label``, ``_mask``, ``_masks``) added; an image without labels
    is an error that names it.
    """
    if len(paths) == 2 and all(Path(p).is_dir() for p in paths):
        images, labels_dir = _tiffs_in(Path(paths[0])), Path(paths[1])
        if not images:
            raise InputError(f"the folder {paths[0]} holds no TIFF files (.tif, .tiff)")
        labels = {p.name: p for p in _tiffs_in(labels_dir)}
        pairs = []
        for image in images:
            names = [f"{image.stem}{extra}{suffix}" for extra in LABEL_SUFFIXES for suffix in TIFF_SUFFIXES]
            match = next((labels[n] for n in names if n in labels), None)
            if match is None:
                raise InputError(f"{image} has no labels in {labels_dir} (looked for {image.stem}.tif, {names[2]}, …)")
            pairs.append((image, match))
        return pairs
    if len(paths) % 2:
        raise InputError(f"give images and labels in pairs (IMAGE LABELS ...), or two folders; got {len(paths)} paths")
    return [(Path(paths[i]), Path(paths[i + 1])) for i in range(0, len(paths), 2)]


@dataclass
class Job:
    source: Path
    target: Path


def plan_jobs(inputs: list[str], out_dir: Path, output: str) -> list[Job]:
    """One job per input file; outputs already in ``out_dir`` from an earlier run are not inputs."""
    suffix = f"_{output}.tif"
    jobs: list[Job] = []
    targets: dict[Path, Path] = {}
    for source in expand_inputs(inputs):
        if source.name.endswith(suffix) and source.resolve().parent == out_dir.resolve():
            continue  # an output of an earlier run, found by naming the output folder as an input
        target = out_dir / f"{source.stem}{suffix}"
        if target.resolve() in targets:
            raise InputError(
                f"{source} and {targets[target.resolve()]} would both be written to {target}; "
                "predict them into different --out-dir folders"
            )
        targets[target.resolve()] = source
        jobs.append(Job(source, target))
    if not jobs:
        raise InputError("no images to predict among the inputs given")
    return jobs
