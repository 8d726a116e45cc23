"""Make the README's screenshots: napari with the plugin, mid-training and after prediction.

Run on a (virtual) display from the repository root:
    xvfb-run -a -s "-screen 0 1600x1400x24" .venv/bin/python scripts/screenshots.py

``--walkthrough-3d`` makes the README's 3D walk-through instead: the 3D sample with only 3 slices
painted, 3D training, a prediction of another volume, and that prediction in napari's 3D view.

``--first-window`` only saves the window ``napari-pix2pix gui`` opens, as it opens, on the screen it is
given (e.g. ``-screen 0 1366x768x24``), to look at how the first window uses that screen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from qtpy.QtTest import QTest

from napari_pix2pix._launch import open_viewer


def wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        QTest.qWait(100)


def advanced_settings(train, path: Path) -> None:
    """The Train widget alone with its advanced settings open (then closed again)."""
    from superqt import QCollapsible

    collapsibles = train.findChildren(QCollapsible)
    for collapsible in collapsibles:
        collapsible.expand(animate=False)
    size = train.size()
    train.resize(460, 1020)
    QTest.qWait(300)
    train.grab().save(str(path))
    for collapsible in collapsibles:
        collapsible.collapse(animate=False)
    train.resize(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs", help="folder for the PNG files")
    parser.add_argument("--train-seconds", type=float, default=90, help="training time before the first shot")
    parser.add_argument("--first-window", metavar="PNG", help="only save the first window, as it opens")
    parser.add_argument("--walkthrough-3d", action="store_true", help="the 3D walk-through's screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    if args.walkthrough_3d:
        walkthrough_3d(out, args.train_seconds)
        return
    if args.first_window:
        viewer, _, _ = open_viewer("nuclei")
        QTest.qWait(1500)
        viewer.screenshot(str(out / args.first_window), canvas_only=False)
        size = viewer.window._qt_window.size()
        print(f"window {size.width()}×{size.height()}, canvas {viewer.window._qt_viewer.canvas.size}")
        viewer.close()
        return

    viewer, train, predict = open_viewer("nuclei")
    viewer.window.resize(1500, 1300)
    viewer.dims.set_current_step(0, 1)
    QTest.qWait(500)
    viewer.screenshot(str(out / "screenshot-start.png"), canvas_only=False)
    advanced_settings(train, out / "screenshot-advanced.png")

    train.start()
    wait(lambda: not train.running, args.train_seconds)
    viewer.screenshot(str(out / "screenshot-training.png"), canvas_only=False)
    train.stop()
    wait(lambda: not train.running, 60)

    viewer.layers["nuclei labels"].visible = False
    predict.image_picker.value = viewer.layers["nuclei"]
    predict.output_choice.value = "instances"
    predict.run()
    wait(lambda: not predict.running, 120)
    viewer.reset_view()
    QTest.qWait(300)
    viewer.screenshot(str(out / "screenshot-prediction.png"), canvas_only=False)
    print(train.status.text())
    print(predict.status.text())

    # Correct and retrain: erase a block of the prediction on slice 1, add it as a pair, continue.
    from napari_pix2pix._widgets import model_store

    predicted = viewer.layers[-1]
    ys, xs = np.mgrid[40:90, 40:90]
    predicted.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), 0)
    train.image_picker.value, train.labels_picker.value = viewer.layers["nuclei"], predicted
    train.pairs.add_button.click()
    train.start_from.value = model_store.names()[-1]
    train.max_minutes.value = 0.5
    train.start()
    wait(lambda: not train.running, 60)
    QTest.qWait(300)
    viewer.screenshot(str(out / "screenshot-continue.png"), canvas_only=False)
    print(train.status.text())
    viewer.close()


def walkthrough_3d(out: Path, train_seconds: float) -> None:
    """The 3D sample with 3 painted slices, trained in 3D, a second volume predicted, seen in 3D."""
    from napari_pix2pix.samples import NUCLEI_3D_VOXEL_SIZE, nuclei_volume

    viewer, train, predict = open_viewer("nuclei_3d")
    image, labels = viewer.layers["nuclei 3D"], viewer.layers["nuclei 3D labels"]
    painted = [10, 24, 38]  # as a user paints 3 slices of a stack: the others stay 0, not annotated
    keep = np.zeros(labels.data.shape[0], bool)
    keep[painted] = True
    labels.data = np.where(keep[:, None, None], labels.data, 0)
    viewer.dims.set_current_step(0, 24)
    train.image_picker.value, train.labels_picker.value = image, labels
    train.max_minutes.value = train_seconds / 60
    QTest.qWait(500)
    train.start()
    wait(lambda: not train.running, train_seconds * 0.6)
    viewer.screenshot(str(out / "screenshot-3d-training.png"), canvas_only=False)
    wait(lambda: not train.running, train_seconds + 120)
    print(train.status.text())

    other, _ = nuclei_volume(seed=7)
    new = viewer.add_image(other, name="another volume", scale=NUCLEI_3D_VOXEL_SIZE)
    for layer in (image, labels):
        layer.visible = False
    predict.image_picker.value = new
    predict.run()
    wait(lambda: not predict.running, 300)
    print(predict.status.text())
    viewer.reset_view()
    QTest.qWait(300)
    viewer.screenshot(str(out / "screenshot-3d-prediction.png"), canvas_only=False)
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0, 35, 55)
    viewer.camera.zoom *= 0.9
    QTest.qWait(800)
    viewer.screenshot(str(out / "screenshot-3d-view.png"), canvas_only=True)
    viewer.close()


if __name__ == "__main__":
    main()
