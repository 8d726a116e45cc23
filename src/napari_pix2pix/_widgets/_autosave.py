"""Keeping a model trained but not saved when napari closes, in the user's data folder."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from pathlib import Path

from napari.utils.notifications import show_info

from ..errors import InputError
from ..io import save_model
from ..models.trained import TrainedModel

logger = logging.getLogger(__name__)


def autosave_folder() -> Path:
    """Where models trained but not saved are kept when napari closes (``NAPARI_PIX2PIX_AUTOSAVE``
    overrides it)."""
    override = os.environ.get("NAPARI_PIX2PIX_AUTOSAVE")
    if override:
        return Path(override)
    from platformdirs import user_data_path

    return user_data_path("napari-pix2pix") / "autosave"


def file_name(name: str, fallback: str) -> str:
    """``name`` made safe as a file name (letters, digits, '.', '-' and '_')."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or fallback


def autosave(model: TrainedModel, name: str) -> Path | None:
    """Save ``model`` in ``autosave_folder()`` and say where (on stderr and in the log: the viewer
    is closing, so a notification would not be seen). None if even that fails (it is logged)."""
    safe = file_name(name, "model")
    try:
        folder = autosave_folder()
        folder.mkdir(parents=True, exist_ok=True)
        path = save_model(model, folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}.pt")
    except (InputError, OSError) as error:
        logger.error("napari-pix2pix: could not keep the unsaved model '%s': %s", name, error)
        return None
    message = f"napari-pix2pix: the model '{name}' was trained but not saved; it is kept in {path}"
    logger.warning(message)
    print(message, file=sys.stderr)
    with contextlib.suppress(Exception):  # napari may be closing: the notification is a bonus
        show_info(message)
    return path
