"""The guard that stops a widget's worker when the widget or the viewer goes away, and the exit
hook that stops every worker when the process ends."""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

if TYPE_CHECKING:
    from napari.qt.threading import GeneratorWorker

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

    def __init__(self, widget: QWidget, on_close: Callable[[], None] | None = None) -> None:
        super().__init__(widget)
        self._widget = widget
        self._window: QWidget | None = None
        self.worker: GeneratorWorker | None = None
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

    def start(self, worker: GeneratorWorker) -> threading.Event:
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

    def eventFilter(self, obj: QObject | None, event: QEvent) -> bool:  # type: ignore[override]  # Qt passes an event
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
            top = cast(QWidget, top.parentWidget())  # not None: checked just above
            top.installEventFilter(self)  # installing twice keeps one filter
        if top is not self._widget:
            self._window = top
