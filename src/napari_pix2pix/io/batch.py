"""Many images in one command: which files an input list names, and where each one's output goes.

``napari-pix2pix predict MODEL INPUT [INPUT ...] --out-dir DIR`` takes files, folders (their TIFF
files, sorted by name) and glob patterns (for shells that do not expand them); each input gets one
output in DIR named after it, ``<name>_<output>.tif``. File name suffixes (``.tif``, ``_labels``)
are matched whatever their case (``S0.TIF``, ``s0_Labels.tif``).
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..labels.outputs import OUTPUTS

TIFF_SUFFIXES = (".tif", ".tiff")


def is_tiff(path: Path) -> bool:
    """Whether ``path`` is named like a TIFF file (.tif or .tiff, in any case)."""
    return path.suffix.lower() in TIFF_SUFFIXES


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_tiff(p) and not p.name.startswith("."))


def _any_case(pattern: str) -> str:
    """``pattern`` with a TIFF suffix that matches it in any case (``*.tif`` finds ``S0.TIF`` too)."""
    for suffix in TIFF_SUFFIXES:
        if pattern.lower().endswith(suffix):
            stem = pattern[: -len(suffix)]
            return stem + "." + "".join(f"[{c.lower()}{c.upper()}]" for c in suffix[1:])
    return pattern


def _expanded(inputs: list[str]) -> list[tuple[Path, bool]]:
    """(file, found by expanding a folder or a glob) for every file ``inputs`` name, in order, each once."""
    found: dict[Path, bool] = {}
    for given in inputs:
        path, expanded = Path(given), True
        if path.is_dir():
            files = _tiffs_in(path)
            if not files:
                raise InputError(f"the folder {given} holds no TIFF files (.tif, .tiff)")
        elif path.exists():
            files, expanded = [path], False
        elif glob.has_magic(given):
            files = sorted({Path(p) for p in glob.glob(_any_case(given)) if Path(p).is_file()})
            if not files:
                raise InputError(f"no file matches {given}")
        else:
            raise InputError(f"{given}: no such file or folder")
        for file in files:
            found[file] = found.get(file, True) and expanded  # a file also named on its own is an input
    return list(found.items())


def expand_inputs(inputs: list[str]) -> list[Path]:
    """The files ``inputs`` name, in order, each once; ``InputError`` for a name that matches nothing."""
    return [file for file, _ in _expanded(inputs)]


LABEL_SUFFIXES = ("", "_labels", "-labels", "_label", "_masks", "_mask")


def _labels_stem(path: Path) -> str | None:
    """The image name a labels-suffixed file (``NAME_labels.tif``, ``NAME_mask.tif``…) belongs to."""
    stem = path.stem.lower()
    return next((path.stem[: -len(s)] for s in LABEL_SUFFIXES if s and stem.endswith(s) and len(stem) > len(s)), None)


def training_pairs(paths: list[str]) -> list[tuple[Path, Path]]:
    """(image, labels) files from ``IMAGE LABELS [IMAGE LABELS ...]`` or ``IMAGES_DIR LABELS_DIR``.

    In folders, an image's labels are the TIFF of the same name in the labels folder, or of its name
    with ``_labels`` (``-labels``, ``_label``, ``_mask``, ``_masks``) added; an image without labels,
    or with two candidates, is an error that names it. Images and labels may share one folder: then
    the labels-suffixed files are the labels, the others the images. Labels files without an image
    are not used, with a warning (``warnings.warn``) naming them. A file is never its own labels.
    """
    if len(paths) == 2 and all(Path(p).is_dir() for p in paths):
        return _folder_pairs(Path(paths[0]), Path(paths[1]))
    if len(paths) % 2:
        raise InputError(f"give images and labels in pairs (IMAGE LABELS ...), or two folders; got {len(paths)} paths")
    pairs = [(Path(paths[i]), Path(paths[i + 1])) for i in range(0, len(paths), 2)]
    for image, labels in pairs:
        if image.resolve() == labels.resolve():
            raise InputError(f"{image} is given as its own labels; give each image, then its labels file")
    return pairs


def _folder_pairs(images_dir: Path, labels_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs of two folders (or of one, given twice): see ``training_pairs``."""
    same = images_dir.resolve() == labels_dir.resolve()
    files = _tiffs_in(images_dir)
    labels = files if same else _tiffs_in(labels_dir)
    images = [f for f in files if not (same and _labels_stem(f) is not None)]
    if not images:
        held = "holds no TIFF files (.tif, .tiff)" if not files else "holds only labels files (NAME_labels.tif …)"
        raise InputError(f"the folder {images_dir} {held}")
    by_name: dict[str, list[Path]] = {}
    for file in labels:
        by_name.setdefault(file.name.lower(), []).append(file)
    extras = [extra for extra in LABEL_SUFFIXES if extra or not same]  # one folder: never the image itself
    pairs = []
    for image in images:
        names = [f"{image.stem}{extra}{suffix}" for extra in extras for suffix in TIFF_SUFFIXES]
        found = [p for n in names for p in by_name.get(n.lower(), []) if p.resolve() != image.resolve()]
        if not found:
            raise InputError(f"{image} has no labels in {labels_dir} (looked for {names[0]}, {names[2]}, …)")
        if len(found) > 1:
            raise InputError(
                f"{image} has {len(found)} possible labels files in {labels_dir}: "
                f"{', '.join(p.name for p in found)}; keep one (rename or move the others)"
            )
        pairs.append((image, found[0]))
    used = {labels for _, labels in pairs} | set(images)
    unused = [file for file in labels if file not in used]
    if unused:
        named = ", ".join(p.name for p in unused[:3]) + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
        warnings.warn(
            f"{len(unused)} labels file(s) in {labels_dir} have no image and are not used: {named}", stacklevel=3
        )
    return pairs


@dataclass
class Job:
    source: Path
    target: Path


@dataclass
class BatchPlan:
    """The jobs of a batch, and how many files of the output folder were left out as earlier outputs."""

    jobs: list[Job]
    earlier_outputs: int = 0


def is_output_name(path: Path) -> bool:
    """Whether ``path`` is named like an output of a batch (``<name>_<output>.tif``, any output kind)."""
    name = path.name.lower()
    return any(name.endswith(f"_{kind}.tif") and len(name) > len(kind) + 5 for kind in OUTPUTS)


def plan_jobs(inputs: list[str], out_dir: Path, output: str) -> BatchPlan:
    """One job per input file. Files of ``out_dir`` named like outputs (of any kind) that a folder
    or a glob found are outputs of an earlier run, not inputs (a file named on its own is an input)."""
    suffix = f"_{output}.tif"
    jobs: list[Job] = []
    targets: dict[Path, Path] = {}
    earlier = 0
    out = out_dir.resolve()
    for source, expanded in _expanded(inputs):
        if expanded and is_output_name(source) and source.resolve().parent == out:
            earlier += 1
            continue
        target = out_dir / f"{source.stem}{suffix}"
        if target.resolve() in targets:
            raise InputError(
                f"{source} and {targets[target.resolve()]} would both be written to {target}; "
                "predict them into different --out-dir folders"
            )
        targets[target.resolve()] = source
        jobs.append(Job(source, target))
    if not jobs:
        left = f" ({earlier} file(s) in {out_dir} are outputs of an earlier run, not inputs)" if earlier else ""
        raise InputError(f"no images to predict among the inputs given{left}")
    return BatchPlan(jobs, earlier)
