"""Open napari with the plugin's widgets docked and a sample loaded (``napari-pix2pix gui``)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

    from ._widgets.predict_widget import PredictWidget
    from ._widgets.train_widget import TrainWidget

PLUGIN = "napari-pix2pix"


def has_display() -> bool:
    """False on a Linux machine with neither X11 nor Wayland (e.g. a server over SSH)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_viewer(sample: str | None = "nuclei") -> tuple[napari.Viewer, TrainWidget, PredictWidget]:
    """A napari viewer with Train and Predict docked and ``sample`` opened; returns (viewer, train, predict)."""
    import napari

    viewer = napari.Viewer(title="napari-pix2pix")
    if sample:
        viewer.open_sample(PLUGIN, sample)
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    return viewer, train, predict


def main(sample: str | None = "nuclei") -> int:
    if not has_display():
        print(
            "napari needs a display, and this machine has none.\n"
            "  - headless training and prediction: napari-pix2pix demo   (or: napari-pix2pix train / predict)\n"
            "  - napari on a virtual screen:       xvfb-run -a napari-pix2pix gui\n"
            "  - or connect with X forwarding (ssh -X) or a remote desktop.",
            file=sys.stderr,
        )
        return 2
    import napari

    open_viewer(sample)
    napari.run()
    return 0
