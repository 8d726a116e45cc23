"""Reading a bioimage.io model package exported by napari-pix2pix: its own settings (the
description's ``config``) and its weights, as the same payload a model file holds, so a package
goes through the same schema and limits as a ``.pt`` file (the export lives in
``napari_pix2pix.bioimageio``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError
from .schema import weights_digest

#: Fields of a package's own settings, copied into the payload as they are (the schema checks them).
PACKAGE_FIELDS = (
    "config",
    "encoding",
    "normalisation",
    "patch_size",
    "object_size",
    "pixel_size",
    "voxel_size",
    "binning",
)


def package_payload(path: Path) -> dict[str, Any]:
    """The model-file payload of the package at ``path``; its weights are read without executing
    pickled code. ``ModelFileError`` in one line when it is not a package napari-pix2pix exported."""
    import io
    import zipfile

    import yaml

    not_ours = f"{path} is not a bioimage.io package exported by napari-pix2pix"
    try:
        with zipfile.ZipFile(path) as package:
            description = yaml.safe_load(package.read("rdf.yaml"))
            own = description["config"]["napari_pix2pix"]
            source = description["weights"]["pytorch_state_dict"]["source"]
            if not isinstance(own, dict) or not isinstance(source, str):
                raise TypeError("its napari_pix2pix settings or weights entry have the wrong type")
            data = package.read(source)
    except (OSError, KeyError, TypeError, zipfile.BadZipFile, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{not_ours} ({type(error).__name__}: {_first_line(error)})") from None
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # a pickle with code or objects, or not a state dict at all
        raise ModelFileError(
            f"{path}: its weights ({source}) are not a plain state dict (they may be damaged, or hold code, "
            "which is refused)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(f"{path}: its weights ({source}) are not a table of named tensors")
    payload = {name: own[name] for name in PACKAGE_FIELDS if name in own}
    payload["state_dict"] = {k.removeprefix("network."): v for k, v in state.items()}
    if all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        payload["weights_sha256"] = weights_digest(payload["state_dict"])
    return payload


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]
