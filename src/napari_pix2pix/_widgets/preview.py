"""The live training preview, drawn in the Train dock: the slice the viewer shows, in grey, with the
current network's labels over it in colour.

It is a picture in the dock rather than a layer in the viewer: adding a layer and redrawing napari's
canvas each time the preview changes stalls napari (≈ 250 ms to add a Labels layer and 100–200 ms per
update under a software-rendered display, docs/benchmarks.md, Responsiveness in napari), while
repainting this picture takes about a millisecond.
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt
from qtpy.QtGui import QColor, QImage, QPainter, QPaintEvent
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._layers import layer_array

if TYPE_CHECKING:
    import napari

MAX_SIDE = 512  # the preview is drawn from at most this many pixels per side (the dock is narrower)
OPACITY = 0.45  # of the labels' colours over the image
_GOLDEN = 0.618033988749895


def label_colours(count: int) -> np.ndarray:
    """(count, 3) float colours in 0..1 for labels 1..count: hues spread by the golden ratio, so
    neighbouring labels (touching instances) differ."""
    return np.array([colorsys.hsv_to_rgb((label * _GOLDEN) % 1.0, 0.75, 1.0) for label in range(1, count + 1)])


_PALETTE = label_colours(256).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    """(Y, X, 3) float in 0..1: a 2D image, an RGB(A) image or a multichannel image's first channel,
    stretched between its 1st and 99.8th percentiles."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., :3] if image.shape[-1] in (3, 4) else image[..., 0]
    low, high = np.percentile(image, (1, 99.8))
    scaled = np.clip((image - low) / (high - low if high > low else 1.0), 0, 1)
    return scaled if scaled.ndim == 3 else np.repeat(scaled[..., None], 3, axis=-1)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(Y, X, 3) uint8: ``image`` in grey with ``labels`` (> 0) in colour over it, both taken at most
    ``MAX_SIDE`` pixels per side (every n-th pixel, so labels stay sharp)."""
    labels = np.asarray(labels)
    step = max(1, -(-max(labels.shape[:2]) // MAX_SIDE))
    labels = labels[::step, ::step]
    picture = _grey(np.asarray(image)[::step, ::step])
    if picture.shape[:2] != labels.shape[:2]:  # the viewer moved to an image of another size: labels alone
        picture = np.zeros((*labels.shape[:2], 3), np.float32)
    values = labels.astype(np.int64, copy=False)
    present = values > 0
    if present.any():
        colours = _PALETTE[(values[present] - 1) % len(_PALETTE)]
        picture[present] = (1 - OPACITY) * picture[present] + OPACITY * colours
    return (picture * 255).round().astype(np.uint8)


class PreviewPicture(QWidget):
    """A picture drawn at the dock's width (at most ``HEIGHT`` pixels high, keeping its aspect ratio),
    with ``caption`` under it, or ``placeholder`` until there is one. Its size does not depend on the
    picture, so a new picture never changes the dock's layout (which would resize, and redraw,
    napari's canvas)."""

    HEIGHT = 240

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.placeholder = placeholder
        self.picture: np.ndarray | None = None  # the (Y, X, 3) uint8 array shown
        self.caption = ""
        self._image: QImage | None = None
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def show_picture(self, picture: np.ndarray, caption: str) -> None:
        self.picture = np.ascontiguousarray(picture)
        height, width = self.picture.shape[:2]
        # QImage reads the bytes' memory; .copy() gives it its own.
        self._image = QImage(self.picture.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        self.caption = caption
        self.setToolTip(caption)
        self.update()

    def clear(self) -> None:
        self.picture, self._image, self.caption = None, None, ""
        self.setToolTip("")
        self.update()

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        hint.setHeight(self.HEIGHT)
        return hint

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        painter.setPen(QColor("#9ea3ad"))
        if self._image is None:
            flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
            painter.drawText(self.rect().adjusted(12, 0, -12, 0), flags, self.placeholder)
        else:
            room = QRectF(0, 0, self.width(), self.height() - 20)
            scale = min(room.width() / self._image.width(), room.height() / self._image.height())
            width, height = self._image.width() * scale, self._image.height() * scale
            painter.drawImage(QRectF((room.width() - width) / 2, 0, width, height), self._image)
            painter.drawText(QRectF(0, height + 2, self.width(), 18), Qt.AlignmentFlag.AlignCenter, self.caption)
        painter.end()


class LivePreview:
    """The live preview's bookkeeping: which slice of the training layer the viewer shows (followed
    in the GUI thread), the slice handed to the training thread (``source``, its ``preview_source``),
    and the network's labels for it drawn in ``picture`` over that same slice (``show``)."""

    def __init__(self, viewer: napari.viewer.Viewer, picture: PreviewPicture) -> None:
        self.viewer, self.picture, self.layer = viewer, picture, None
        self._current: tuple[int | None, np.ndarray] | None = None  # (slice, 2D image) in view
        self._previewed: tuple[int | None, np.ndarray] | None = None  # the one last handed to training
        self._stack: Any = None  # the layer's stack (Z, Y, X[, C]) when it has one, for a 3D network's block
        self._block_start: int | None = None  # the first slice of the block last handed to training
        viewer.dims.events.current_step.connect(self.follow)

    def start(self, layer: napari.layers.Image) -> None:
        """A run on ``layer`` starts: follow its slices, clear the last run's picture."""
        self.layer = layer
        self.follow()
        self.picture.clear()

    def follow(self, event: napari.utils.events.Event | None = None) -> None:
        """Remember the 2D slice of the layer that the viewer shows (GUI thread only)."""
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            self._current, self._stack = None, None
            return
        data = layer_array(layer)
        spatial = data.ndim - (1 if layer.rgb else 0)
        self._stack = None
        if spatial == 2:
            self._current = (None, data)
        elif spatial == 3:
            z = min(max(int(round(layer.world_to_data(self.viewer.dims.point)[0])), 0), data.shape[0] - 1)
            self._current, self._stack = (z, np.asarray(data[z])), data
        else:
            self._current = None

    def source(self, depth: int | None = None) -> np.ndarray | None:
        """The slice to preview on (called by the worker thread: plain attribute reads and writes);
        with ``depth`` (a 3D network), a block of up to ``depth`` slices of the stack around it."""
        current, stack = self._current, self._stack
        self._previewed, self._block_start = current, None
        if current is None:
            return None
        if depth is None:
            return current[1]
        z = current[0]
        if stack is None or z is None:
            return None  # a single image: nothing for a 3D network to preview on
        start = min(max(z - depth // 2, 0), max(stack.shape[0] - depth, 0))
        self._block_start = start
        return np.asarray(stack[start : start + depth])

    def show(self, labels: np.ndarray, epoch: int | None) -> None:
        """Draw the network's labels over the slice they were predicted for."""
        previewed = self._previewed
        if previewed is None:
            return
        z, image = previewed
        if labels.ndim == 3:  # a 3D network's labels for the block around the slice: that slice's
            if self._block_start is None or z is None:
                return
            labels = labels[z - self._block_start]
        where = f", slice {z}" if z is not None else ""
        name = getattr(self.layer, "name", "image")
        self.picture.show_picture(overlay(image, labels), f"Preview: {name}{where}, epoch {epoch}")
