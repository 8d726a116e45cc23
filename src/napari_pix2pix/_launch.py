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
    use_the_screen(viewer)
    if sample:
        viewer.open_sample(PLUGIN, sample)
    train_dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    predict_dock, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    narrow_docks(viewer, [train_dock, predict_dock])
    return viewer, train, predict


SCREEN_FRACTION = 0.92  # of the screen's free area (without task bars), the window centred in it


def use_the_screen(viewer: napari.Viewer) -> None:
    """Size the window to most of its screen, as a desktop application opens: napari's first window
    is small (about 800×650), which leaves the canvas a strip between the layer controls and two docks."""
    from qtpy.QtGui import QGuiApplication

    window = viewer.window._qt_window
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        return
    area = screen.availableGeometry()
    width, height = round(area.width() * SCREEN_FRACTION), round(area.height() * SCREEN_FRACTION)
    window.resize(width, height)
    window.move(area.x() + (area.width() - width) // 2, area.y() + (area.height() - height) // 2)


DOCK_ROOM = 4  # pixels beside the docks' widest row


def narrow_docks(viewer: napari.Viewer, docks: list) -> None:
    """Give the docks no more of the window's width than they need, so the canvas keeps the most."""
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    width = max(dock.widget().minimumSizeHint().width() for dock in docks) + DOCK_ROOM
    window.resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)


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
