"""What a model file may hold: every field's type and range, and the digest of its weights.

``check_payload`` is run on every file before anything is built from it, so an edited or damaged
file is refused with a message that names the field, instead of failing (or hanging) later. The
weights carry a SHA-256 digest written at save time; a flipped bit or a cut file no longer matches.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch

from ..labels.encodings import ENCODINGS
from ..models.networks import ARCHITECTURES, MODEL_LIMITS

# The same bounds as training's (one source of truth), so every model trained can be loaded.
LIMITS = MODEL_LIMITS
MAX_OBJECT_SIZE = 1e6
MAX_LABEL = 2**63 - 1


class SchemaError(ValueError):
    """A field of a model file has the wrong type or an impossible value."""


def weights_digest(*state_dicts: Mapping[str, torch.Tensor] | None) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for number, state in enumerate(state_dicts):
        for name in sorted(state or {}):
            tensor = state[name].detach().cpu().contiguous()  # type: ignore[index]
            digest.update(f"{number}/{name}/{tensor.dtype}/{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _integer(where: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where} must be a whole number, found {type(value).__name__} {value!r:.40}")
    if not low <= value <= high:
        raise SchemaError(f"{where} must be from {low} to {high}, found {value}")
    return value


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"{where} must be a finite number, found {value!r:.40}")
    return float(value)


def _mapping(where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise SchemaError(f"{where} must be a table of fields, found {type(value).__name__}")
    return value


def _tensors(where: str, value: object) -> None:
    state = _mapping(where, value)
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise SchemaError(f"{where} must map names to tensors")


def check_config(config: object) -> None:
    config = _mapping("config", config)
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise SchemaError(f"config.architecture must be one of {sorted(ARCHITECTURES)}, found {architecture!r:.40}")
    for name in ("in_channels", "out_channels", "width", "depth"):
        _integer(f"config.{name}", config.get(name), *LIMITS[name])
    if "z_skip" in config:
        _integer("config.z_skip", config["z_skip"], 0, config["depth"])
    extra = sorted(set(config) - {"architecture", "in_channels", "out_channels", "width", "depth", "z_skip"})
    if extra:
        raise SchemaError(f"config holds unknown fields {extra}")


def check_encoding(encoding: object, n_classes: int) -> None:
    encoding = _mapping("encoding", encoding)
    if not isinstance(encoding.get("kind"), str) or encoding["kind"] not in ENCODINGS:
        raise SchemaError(f"encoding.kind must be one of {sorted(ENCODINGS)}, found {encoding.get('kind')!r:.40}")
    values = encoding.get("class_values")
    if not isinstance(values, list) or len(values) != n_classes:
        raise SchemaError(f"encoding.class_values must list the network's {n_classes} classes")
    for value in values:
        _integer("encoding.class_values", value, 0, MAX_LABEL)
    _integer("encoding.background", encoding.get("background", 0), 0, n_classes - 1)


def check_normalisation(normalisation: object, in_channels: int) -> None:
    normalisation = _mapping("normalisation", normalisation)
    for name in ("low", "high"):
        values = normalisation.get(name)
        if not isinstance(values, list) or len(values) != in_channels:
            raise SchemaError(f"normalisation.{name} must list one number per input channel ({in_channels})")
        for value in values:
            _number(f"normalisation.{name}", value)
    if not all(high > low for low, high in zip(normalisation["low"], normalisation["high"])):
        raise SchemaError("normalisation.high must be above normalisation.low for every channel")
    per_image = normalisation.get("per_image", False)
    if not isinstance(per_image, bool):
        raise SchemaError(f"normalisation.per_image must be true or false, found {per_image!r:.40}")
    if per_image:
        lower = _number("normalisation.lower", normalisation.get("lower"))
        upper = _number("normalisation.upper", normalisation.get("upper"))
        if not 0 <= lower < upper <= 100:
            raise SchemaError(
                f"normalisation percentiles must satisfy 0 <= lower < upper <= 100, found {lower}, {upper}"
            )


def _physical_size(where: str, value: object, axes: str) -> None:
    """A pixel or voxel size: absent, or one positive finite number per axis of ``axes``."""
    if value is None:
        return
    count = len(axes.split(", "))
    if not isinstance(value, list) or len(value) != count:
        raise SchemaError(f"{where} must be {('two', 'three')[count - 2]} numbers ({axes}) or empty")
    if not all(_number(where, v) > 0 for v in value):
        raise SchemaError(f"{where} must be positive, found {value}")


def check_payload(payload: dict, version: int) -> None:
    """Raise ``SchemaError`` naming the first field of ``payload`` that is missing or out of range."""
    check_config(payload.get("config"))
    config = payload["config"]
    check_encoding(payload.get("encoding"), config["out_channels"])
    check_normalisation(payload.get("normalisation"), config["in_channels"])
    _integer("patch_size", payload.get("patch_size", 256), *LIMITS["patch_size"])
    object_size = payload.get("object_size")
    if object_size is not None and not 0 < _number("object_size", object_size) <= MAX_OBJECT_SIZE:
        raise SchemaError(f"object_size must be a positive number of pixels, found {object_size}")
    _physical_size("pixel_size", payload.get("pixel_size"), "y, x")
    _physical_size("voxel_size", payload.get("voxel_size"), "z, y, x")
    _integer("binning", payload.get("binning", 1), *LIMITS["binning"])
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise SchemaError("history must be a list of tables")
    _tensors("state_dict", payload.get("state_dict"))
    if payload.get("discriminator_state_dict") is not None:
        _tensors("discriminator_state_dict", payload["discriminator_state_dict"])
    if version >= 2:
        stored = payload.get("weights_sha256")
        if not isinstance(stored, str):
            raise SchemaError("weights_sha256 is missing")
        if stored != weights_digest(payload["state_dict"], payload.get("discriminator_state_dict")):
            raise SchemaError("its weights do not match their stored checksum (the file was changed or damaged)")
