"""Pieces shared by the Train and Predict widgets: layer pickers, messages, the model store, and
the guard that stops a worker when its widget or viewer goes away."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Layer
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QFileDialog, QFrame, QScrollArea, QVBoxLayout, QWidget

from ..errors import InputError
from ..io import load_model, save_model
from ..models.trained import TrainedModel

logger = logging.getLogger(__name__)

# Device choices shown by both widgets: (label, value for devices.resolve_device).
DEVICES = [("Automatic (GPU if present)", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda"), ("Apple MPS", "mps")]


class ModelStore:
    """Models trained or loaded in this session, by name, shared by every widget."""

    changed = Signal()

    def __init__(self):
        self._models: dict[str, TrainedModel] = {}

    def add(self, name: str, model: TrainedModel) -> str:
        """Store ``model`` under ``name`` (made unique) and return the name used."""
        unique, n = name, 2
        while unique in self._models and self._models[unique] is not model:
            unique, n = f"{name} ({n})", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> TrainedModel:
        return self._models[name]


model_store = ModelStore()


def load_model_dialog(parent) -> tuple[str, TrainedModel] | None:
    """Ask for a model file, load it safely and add it to the store; None if cancelled or refused."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load model", "", "napari-pix2pix model (*.pt);;All files (*)")
    if not path:
        return None
    try:
        model = load_model(path)
    except InputError as error:
        report_error(error, "Loading the model")
        return None
    return model_store.add(Path(path).stem, model), model


def layer_picker(viewer: napari.Viewer, layer_type: type[Layer], label: str, groups: bool = False) -> ComboBox:
    """A drop-down of the viewer's layers of ``layer_type`` (and, with ``groups``, of the channel
    layers opened from one file, as one image), refreshed by ``reset_choices``."""

    def choices(_widget=None):
        layers = [(layer.name, layer) for layer in viewer.layers if isinstance(layer, layer_type)]
        return layers + ([(group.name, group) for group in channel_groups(viewer)] if groups else [])

    return ComboBox(label=label, choices=choices, nullable=False)


class ChannelGroup:
    """The Image layers napari made from the channels of one file (``channel_axis``), used together
    as one multi-channel image, channels last, in the layer list's order."""

    rgb = False

    def __init__(self, layers: list, name: str):
        self.layers, self.name = layers, name

    def __eq__(self, other) -> bool:
        return isinstance(other, ChannelGroup) and all(a is b for a, b in zip(self.layers, other.layers))

    def __hash__(self) -> int:
        return hash(tuple(id(layer) for layer in self.layers))

    @property
    def data(self):
        arrays = [layer_array(layer) for layer in self.layers]
        if all(isinstance(a, np.ndarray) for a in arrays):
            return np.stack(arrays, axis=-1)
        import dask.array as da

        return da.stack([da.asarray(a) for a in arrays], axis=-1)

    @property
    def scale(self):
        return self.layers[0].scale

    @property
    def translate(self):
        return self.layers[0].translate

    @property
    def ndim(self) -> int:
        return self.layers[0].ndim

    @property
    def multiscale(self) -> bool:
        return False


def channel_groups(viewer: napari.Viewer) -> list[ChannelGroup]:
    """Groups of two or more Image layers opened from the same file, with the same shape."""
    from napari.layers import Image

    by_file: dict[tuple, list] = {}
    for layer in viewer.layers:
        path = getattr(layer.source, "path", None)
        if isinstance(layer, Image) and path and not layer.rgb:
            by_file.setdefault((path, tuple(layer.data.shape)), []).append(layer)
    return [
        ChannelGroup(layers, f"{Path(path).stem} ({len(layers)} channels)")
        for (path, _), layers in by_file.items()
        if len(layers) > 1
    ]


def keep_pickers_in_sync(viewer: napari.Viewer, reset_choices) -> None:
    """Refresh the pickers when layers are added, removed, reordered or renamed."""
    for name in ("inserted", "removed", "reordered"):
        getattr(viewer.layers.events, name).connect(reset_choices)

    def watch_renames(event=None):
        for layer in viewer.layers:
            layer.events.name.connect(reset_choices)

    viewer.layers.events.inserted.connect(watch_renames)
    watch_renames()


def layer_pixel_size(layer) -> tuple[float, float] | None:
    """The (y, x) pixel size napari shows a layer at (its scale), or None for napari's default 1 × 1."""
    y, x = (float(v) for v in layer.scale[-2:])
    return None if (y, x) == (1.0, 1.0) else (y, x)


def layer_array(layer) -> np.ndarray:
    """The layer's data at full resolution, without loading a lazy (dask) array."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class WorkerFailure(Exception):
    """Carries a ``RuntimeError`` out of a worker thread.

    superqt takes a ``RuntimeError`` escaping a worker for a deleted Qt object and drops it
    without emitting ``errored`` or ``finished``; torch reports out-of-memory as a RuntimeError.
    """


def run_reporting_failures(function, *args, **kwargs):
    """Worker body: run the core generator ``function``, re-raising RuntimeError as WorkerFailure."""
    try:
        return (yield from function(*args, **kwargs))
    except RuntimeError as error:
        raise WorkerFailure(error) from error


def report_error(error: BaseException, action: str) -> None:
    """Tell the user what went wrong as a napari notification, never as a traceback."""
    if isinstance(error, WorkerFailure) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, InputError):
        show_error(f"{action}: {error}")
    elif isinstance(error, MemoryError) or "out of memory" in str(error) or "can't allocate memory" in str(error):
        show_error(f"{action}: out of memory. Use a smaller batch size, patch size or tile size, or the CPU.")
    else:
        logger.error("%s failed:\n%s", action, "".join(traceback.format_exception(error)))
        show_error(f"{action} failed unexpectedly: {type(error).__name__}: {error}")


def notify(message: str, warning: bool = False) -> None:
    (show_warning if warning else show_info)(message)


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


_guards: weakref.WeakSet[WorkerGuard] = weakref.WeakSet()


@atexit.register
def _shut_down_all_workers() -> None:
    """At interpreter exit (a script driving napari, napari quit from its console): stop every
    worker and wait for it, so no thread emits on a deleted Qt object, then keep unsaved models."""
    for guard in list(_guards):
        with contextlib.suppress(RuntimeError):  # the guard's Qt side is already deleted
            guard.close()
    # A worker started just before the exit may still be queued, not yet running: wait for the
    # thread pool itself, so it starts, sees its stop event and ends before Qt is torn down.
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool is not None:
        pool.waitForDone(10_000)


class WorkerGuard(QObject):
    """Stops the running worker when its widget is removed from napari, the viewer window closes
    or the process exits, then calls ``on_close`` (the Train widget keeps an unsaved model there).

    A worker is stopped by setting its ``threading.Event`` (the core loops check it every step)
    and disconnecting its signals so nothing is drawn on a closed widget; the thread then ends on
    its own within one step.
    """

    def __init__(self, widget, on_close: Callable[[], None] | None = None):
        super().__init__(widget)
        self._widget = widget
        self._window = None
        self.worker = None
        self.stop_event = threading.Event()
        self.on_close = on_close
        self.closed = False
        widget.installEventFilter(self)
        _guards.add(self)

    def close(self) -> None:
        """Stop the worker and wait for it, then run ``on_close`` (once). Afterwards the guard holds
        no window (a closed dock's widget may outlive it, and must not keep the viewer alive)."""
        self.shutdown()
        self._window = None
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close()

    def start(self, worker) -> threading.Event:
        self.worker = worker
        return self.stop_event

    def new_stop_event(self) -> threading.Event:
        self.stop_event = threading.Event()
        return self.stop_event

    @property
    def running(self) -> bool:
        """True from start until the worker's ``finished`` signal has been handled."""
        return self.worker is not None

    def shutdown(self, wait_ms: int = 10_000) -> None:
        """Stop the worker, detach it from the widget and wait for its thread to end."""
        self.stop_event.set()
        worker, self.worker = self.worker, None
        if worker is None:
            return
        for signal in (worker.yielded, worker.returned, worker.errored, worker.finished, worker.started):
            with contextlib.suppress(TypeError, RuntimeError):  # nothing connected, or Qt deleted it
                signal.disconnect()
        # The core loop sees the stop event within one step; wait for that (this worker only).
        deadline = time.monotonic() + wait_ms / 1000
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.02)

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if self.closed:
            return False
        if kind == QEvent.Type.ParentChange:
            if obj is self._widget and self._widget.parent() is None:
                self.close()  # the dock was closed (also as napari closes): napari un-parents its widget
            else:
                self._watch_window()  # docked, or the dock moved into the main window
        elif obj is self._window and kind == QEvent.Type.Close:
            self.close()
        return False

    def _watch_window(self) -> None:
        """Watch every ancestor (to follow re-parenting) and the top-level window (for its closing)."""
        top = self._widget
        while top.parentWidget() is not None:
            top = top.parentWidget()
            top.installEventFilter(self)  # installing twice keeps one filter
        if top is not self._widget:
            self._window = top


class _ScrollArea(QScrollArea):
    """Asks for its contents' width and for at most ``HEIGHT`` pixels of their height (at least
    ``MINIMUM``), so two docks stacked in napari share its height."""

    HEIGHT, MINIMUM = 600, 280

    def _bar(self) -> int:
        bar = self.verticalScrollBar()
        return bar.sizeHint().width() if bar is not None else 0

    def sizeHint(self) -> QSize:
        contents = self.widget()
        hint = contents.sizeHint() if contents is not None else QSize(0, 0)
        return QSize(hint.width() + self._bar(), min(hint.height(), self.HEIGHT))

    def minimumSizeHint(self) -> QSize:
        contents = self.widget()
        width = contents.minimumSizeHint().width() if contents is not None else 0
        return QSize(width + self._bar(), self.MINIMUM)


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s contents, inside a scroll area that fills it.

    napari stacks dock widgets without scrolling them, so a dock's minimum height is its contents';
    two tall docks would make napari's window taller than a laptop's screen, and any change in their
    contents (an option shown, a longer message) would resize the window and redraw the canvas. In
    a scroll area the contents scroll instead."""
    contents = QWidget()
    scroll = _ScrollArea()
    scroll.setWidget(contents)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(contents)
