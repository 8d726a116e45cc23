"""napari's responsiveness while training: the longest event-loop stalls from Start to the model
being ready, on the nuclei sample, measured with a 20 ms Qt timer (run under Xvfb:
``xvfb-run -a python benchmarks/bench_responsiveness.py``).

A stall is the gap between two timer ticks beyond the 20 ms period. Prints the longest gaps with
their time after Start, with the live preview on and off; ``--stop-after S`` presses *Stop* S seconds
after Start (with ``--minutes 1``, say), to include stopping; ``--predict`` then presses *Predict*,
and, as a baseline in the same viewer, adds a copy of its result as a Labels layer with napari's own
``viewer.add_labels`` (no plugin code): the stall napari itself takes to add such a layer.
The window is the one ``napari-pix2pix gui`` opens (most of the screen given to Xvfb); with
``--napari-window``, napari's own first window (about 800×650) with the two docks added as from the
Plugins menu. The buttons are clicked by their text, as a user (or a GUI test robot) does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QPushButton

from napari_pix2pix._launch import PLUGIN, open_viewer


def napari_window():
    """napari's own first window, the nuclei sample and the two docks added as from the Plugins menu."""
    import napari

    viewer = napari.Viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    return viewer, train, predict


def click(viewer, text: str) -> None:
    """Click the visible button that reads ``text``."""
    for button in viewer.window._qt_window.findChildren(QPushButton):
        if button.text() == text and button.isVisible():
            QTest.mouseClick(button, Qt.MouseButton.LeftButton)
            return
    raise SystemExit(f"no visible button {text!r}")


def longest_gaps(
    preview: bool,
    minutes: float,
    stop_after: float | None = None,
    count: int = 5,
    then_predict: bool = False,
    small_window: bool = False,
):
    """The ``count`` longest gaps (seconds, and when they ended after Start); with ``stop_after``,
    *Stop* is pressed that many seconds after Start; with ``then_predict``, *Predict* is pressed
    once training has ended (the new model on the sample) and timed to its end."""
    viewer, train, predict = napari_window() if small_window else open_viewer("nuclei")
    QTest.qWait(1000)
    train.max_minutes.value = minutes
    train.live_preview.value = preview
    stamps: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start(20)
    start = time.perf_counter()
    click(viewer, "Start training")
    while train.running:
        QTest.qWait(20)
        if stop_after is not None and time.perf_counter() - start > stop_after:
            click(viewer, "Stop")
            stop_after = None
    if then_predict:
        QTest.qWait(500)
        click(viewer, "Predict")
        while predict.running:
            QTest.qWait(20)
    QTest.qWait(500)
    ticks = np.array(stamps)
    gaps = np.diff(ticks)
    found = [(float(gaps[i]), float(ticks[i] - start)) for i in np.argsort(gaps)[::-1][:count]]
    baseline = bare_add_stall(viewer, stamps) if then_predict else None
    timer.stop()
    viewer.close()
    return found, baseline


def bare_add_stall(viewer, stamps: list[float]) -> float:
    """The longest gap (seconds) while napari adds a copy of the last layer (the prediction) with its
    own ``add_labels``, the timer still ticking: what adding such a layer costs without the plugin."""
    result = np.array(viewer.layers[-1].data)
    QTest.qWait(500)
    first = len(stamps)
    viewer.add_labels(result, name="baseline: the same labels added by napari")
    QTest.qWait(500)
    return float(np.diff(np.array(stamps[first - 1 :])).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=0.2, help="training time budget (default 0.2)")
    parser.add_argument("--stop-after", type=float, help="press Stop this many seconds after Start")
    parser.add_argument("--predict", action="store_true", help="then press Predict and time it too")
    parser.add_argument(
        "--napari-window", action="store_true", help="napari's own small first window instead of the launcher's"
    )
    args = parser.parse_args()
    for preview in (False, True):
        found, baseline = longest_gaps(
            preview, args.minutes, args.stop_after, then_predict=args.predict, small_window=args.napari_window
        )
        gaps = ", ".join(f"{gap * 1000:.0f} ms at {at:.1f} s" for gap, at in found)
        print(f"live preview {'on ' if preview else 'off'}: longest gaps {gaps}")
        if baseline is not None:
            print(f"  baseline, napari's own add_labels of the same result: {baseline * 1000:.0f} ms")


if __name__ == "__main__":
    main()
