"""Reading a bioimage.io model package exported by napari-pix2pix back as a ``TrainedModel``
(the export lives in ``napari_pix2pix.bioimageio``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..labels.encodings import LabelEncoding
from ..models.networks import ModelConfig, build_model
from ..models.normalisation import Normalisation
from ..models.trained import TrainedModel


def load_package(path: Path) -> TrainedModel:
    """A bioimage.io package exported by napari-pix2pix, as a model: its own settings from the
    description's ``config``, its weights read without executing pickled code."""
    import io
    import zipfile

    import yaml

    try:
        with zipfile.ZipFile(path) as package:
            description = yaml.safe_load(package.read("rdf.yaml"))
            own = description["config"]["napari_pix2pix"]
            source = description["weights"]["pytorch_state_dict"]["source"]
            state = torch.load(io.BytesIO(package.read(source)), map_location="cpu", weights_only=True)
        config = ModelConfig(**own["config"])
        network = build_model(config)
        network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()}, strict=True)
        encoding = LabelEncoding.from_dict(own["encoding"])
        normalisation = Normalisation.from_dict(own["normalisation"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, zipfile.BadZipFile, yaml.YAMLError) as error:
        raise ModelFileError(
            f"{path} is not a bioimage.io package exported by napari-pix2pix ({type(error).__name__}: {error})"
        ) from None
    pixel_size = own.get("pixel_size")
    return TrainedModel(
        config,
        network.eval(),
        encoding,
        normalisation,
        int(own.get("patch_size", 256)),
        object_size=own.get("object_size"),
        pixel_size=tuple(pixel_size) if pixel_size else None,
    )
