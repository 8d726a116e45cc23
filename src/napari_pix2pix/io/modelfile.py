"""Model files: one file with weights, architecture, normalisation, classes, history and versions.

Files are written atomically (temporary file in the same folder, then rename) and read with
``torch.load(..., weights_only=True)``, which refuses pickled code: a file from an untrusted source
can hold only tensors and plain Python values.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .._version import __version__
from ..errors import InputError, ModelFileError
from ..labels.encodings import LabelEncoding
from ..models.networks import ModelConfig, SizeContract, build_discriminator, build_model
from ..models.normalisation import Normalisation
from ..models.trained import TrainedModel
from .atomic import atomic_write
from .schema import SchemaError, check_payload, weights_digest

FORMAT = "napari-pix2pix model"
# 2: the weights' SHA-256 is stored and checked; every field is validated.
# 3: normalisation may be a per-image rule (older versions would apply its numbers to every image).
# 4: 3D networks (config.z_skip, voxel_size); 2D models are still written as format 3.
# 5: binning of a 3D model's training volumes (a reader of 4 would predict a volume of unknown voxel
#    size at the wrong scale); other 3D models are still written as format 4.
FORMAT_VERSION = 5


def _plain(value: Any) -> Any:
    """Convert numpy scalars and tuples so the file holds only what weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_model(model: TrainedModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically; an interrupted save leaves any old file intact.

    Parameters
    ----------
    model : TrainedModel
        The model to keep: weights, architecture, classes, normalisation, history, versions.
    path : str or os.PathLike
        The file to write (``.pt`` by convention); it is read with ``load_model``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ModelFileError
        When the file cannot be written (missing folder, full disk…); an older file is kept.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": 3 if model.config.dims == 2 else 5 if model.binning > 1 else 4,
        "config": model.config.to_dict(),
        "encoding": model.encoding.to_dict(),
        "normalisation": model.normalisation.to_dict(),
        "patch_size": int(model.patch_size),
        "object_size": None if model.object_size is None else float(model.object_size),
        "pixel_size": None if model.pixel_size is None else [float(v) for v in model.pixel_size],
        **({"voxel_size": [float(v) for v in model.voxel_size]} if model.voxel_size is not None else {}),
        **({"binning": int(model.binning)} if model.binning > 1 else {}),
        "history": _plain(model.history),
        "versions": {
            "napari_pix2pix": __version__,
            "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.network.state_dict().items()},
    }
    if model.discriminator_state is not None:
        payload["discriminator_state_dict"] = {k: v.detach().cpu() for k, v in model.discriminator_state.items()}
    payload["weights_sha256"] = weights_digest(payload["state_dict"], payload.get("discriminator_state_dict"))
    try:
        with atomic_write(path) as tmp:
            try:
                torch.save(payload, tmp)
            except RuntimeError as error:  # torch's writer reports a full or failing disk so
                raise InputError(f"cannot write {path} (is the disk full?): {_first_line(error)}") from None
    except InputError as error:
        raise ModelFileError(f"cannot save the model: {error}") from None
    return path


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _positive_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not value > 0:
        raise ValueError(f"object size must be positive, got {value}")
    return value


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Read a model file safely (``torch.load(..., weights_only=True)``: tensors and plain values,
    never code), checking every field, the weights' SHA-256 and the architecture.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt`` file written by ``save_model``, or a ``.zip`` bioimage.io package exported by
        napari-pix2pix (checked against the same schema and limits).
    device : str or torch.device
        Where to put the network (default: the CPU).

    Returns
    -------
    TrainedModel

    Raises
    ------
    ModelFileError
        A missing, truncated, edited, foreign or newer-version file; the message names the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    if path.suffix.lower() == ".zip":  # a bioimage.io package exported by napari-pix2pix
        from .bioimageio import package_payload

        payload, version = package_payload(path), FORMAT_VERSION
    else:
        payload, version = _read_payload(path)
    return _model_from_payload(payload, version, path, device)


def _read_payload(path: Path) -> tuple[dict, int]:
    """The checked-format payload of a ``.pt`` model file and its format version."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, code-carrying pickle, …
        raise ModelFileError(
            f"{path} is not a readable napari-pix2pix model file (it may be truncated, corrupt, or "
            f"contain code, which is refused): {type(error).__name__}: {_first_line(error)}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a napari-pix2pix model file (a model saved by another program?)")
    version = payload.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} is damaged: its format version {version!r:.40} is not a version number")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was made by a newer napari-pix2pix (model format {version}; this version {__version__} "
            f"reads formats up to {FORMAT_VERSION}); update napari-pix2pix to use it"
        )
    return payload, version


def _model_from_payload(payload: dict, version: int, path: Path, device: str | torch.device) -> TrainedModel:
    """The model a payload describes, once every field has passed the schema."""
    try:
        check_payload(payload, version)
    except SchemaError as error:
        raise ModelFileError(f"{path} is damaged or was edited: {error}") from None
    try:
        config = ModelConfig(**payload["config"])
        network = build_model(config)
        network.load_state_dict(payload["state_dict"], strict=True)
        encoding = LabelEncoding.from_dict(payload["encoding"])
        normalisation = Normalisation.from_dict(payload["normalisation"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(
            f"{path} is damaged or its weights do not match its architecture: {_first_line(error)}"
        ) from None
    patch_size = int(payload.get("patch_size", 256))
    if cast(SizeContract, network).output_size(patch_size) < 1:  # the seed U-Net needs a large enough patch
        raise ModelFileError(f"{path} is damaged or was edited: patch_size {patch_size} is too small for its network")
    discriminator_state = payload.get("discriminator_state_dict")
    if discriminator_state is not None:
        try:
            build_discriminator(config).load_state_dict(discriminator_state, strict=True)
        except RuntimeError:
            raise ModelFileError(f"{path} holds a discriminator that does not match its generator") from None
    network.to(device).eval()
    return TrainedModel(
        config=config,
        network=network,
        encoding=encoding,
        normalisation=normalisation,
        patch_size=patch_size,
        object_size=_positive_or_none(payload.get("object_size")),
        pixel_size=tuple(payload["pixel_size"]) if payload.get("pixel_size") is not None else None,
        voxel_size=tuple(payload["voxel_size"]) if payload.get("voxel_size") is not None else None,
        binning=int(payload.get("binning", 1)),
        history=list(payload.get("history", [])),
        discriminator_state=discriminator_state,
        device=str(device),
    )
