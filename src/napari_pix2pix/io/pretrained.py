"""The models that ship with the plugin (``napari_pix2pix/pretrained/``), by name.

Each is an ordinary model file (read with ``load_model``: no code runs), offered wherever a model is:
``predict nuclei IMAGE`` and ``train --start-from nuclei`` on the command line, *Nuclei (pretrained)*
in the Predict widget's model list and the Train widget's *Start from*, and
``load_pretrained("nuclei")`` in Python. ``pretrained/README.md`` says how each was trained, on what,
and under which licence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # torch is imported when a model is loaded, so that --help stays quick
    from ..models.trained import TrainedModel

FOLDER = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass(frozen=True)
class Pretrained:
    """A model that ships with the plugin."""

    name: str  # what the command line takes
    label: str  # what the widgets show
    filename: str
    about: str  # one line for help texts

    @property
    def path(self) -> Path:
        return FOLDER / self.filename


PRETRAINED = {
    "nuclei": Pretrained(
        "nuclei",
        "Nuclei (pretrained)",
        "nuclei.pt",
        "fluorescence nuclei (2D instances), trained on the 541 greyscale images of DSB2018 stage 1",
    ),
}


def load_pretrained(name: str, device: str = "cpu") -> TrainedModel:
    """The shipped model called ``name`` (see ``PRETRAINED``)."""
    from .modelfile import load_model

    if name not in PRETRAINED:
        raise InputError(f"there is no pretrained model called {name!r}; the plugin ships {', '.join(PRETRAINED)}")
    path = PRETRAINED[name].path
    if not path.is_file():
        raise InputError(f"the pretrained model {name!r} is missing from this installation ({path}); reinstall it")
    return load_model(path, device)


def model_source(argument: str | os.PathLike) -> str | Path:
    """What a model argument names: a model file when one exists at that path, else a shipped model's
    name (returned as the name), else the path (whose loading then says what is wrong)."""
    path = Path(argument)
    if not path.exists() and str(argument) in PRETRAINED:
        return str(argument)
    return path


def load_model_or_pretrained(argument: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """``load_model(argument)``, or the shipped model of that name when no such file exists."""
    from .modelfile import load_model

    source = model_source(argument)
    if isinstance(source, str):
        return load_pretrained(source, device)
    if not source.exists():
        raise InputError(
            f"model file {argument} does not exist (a file written by 'train', or a shipped model: "
            f"{', '.join(PRETRAINED)})"
        )
    return load_model(source, device)


def model_help(what: str = "model file written by 'train'") -> str:
    """The command line's help for a model argument: a file, or a shipped model's name."""
    names = ", ".join(f"'{p.name}' ({p.about})" for p in PRETRAINED.values())
    return f"{what}, or the name of a model that ships with the plugin: {names}"
