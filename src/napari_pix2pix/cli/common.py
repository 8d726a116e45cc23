"""What the commands share: the progress bar, output checks, and signals turned into exceptions."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from ..errors import InputError

EXIT_BAD_INPUT = 2


def check_output(out: str, *inputs: str | None) -> None:
    """Refuse an output that would replace one of the inputs, or that is not a regular file."""
    from ..io.atomic import check_name

    check_name(Path(out))
    target = Path(out).resolve()
    for given in filter(None, inputs):
        if Path(given).resolve() == target:
            raise InputError(f"--out {out} is also an input; choose another file name so the input is kept")
    if target.exists() and not target.is_file() and not out.rstrip("/").lower().endswith(".zarr"):
        raise InputError(f"--out {out} is not a regular file; give the path of a file to write")


@contextlib.contextmanager
def signal_handlers(handler, signals=(signal.SIGINT, signal.SIGTERM)):
    """Install ``handler`` for ``signals`` (main thread only), restoring the old ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class Terminated(BaseException):
    """SIGTERM, raised as an exception so that files being written are cleaned up on the way out."""


def terminate(number, frame):
    raise Terminated


class Progress:
    """A tqdm progress bar on stderr that understands training events and prediction slices."""

    def __init__(self, quiet: bool, description: str, total: int | None = None, unit: str = "step"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.silent = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def training_event(self, event) -> None:
        from ..training.loop import EventKind

        if self.silent:
            return
        if event.kind == EventKind.START:
            self.bar.total = 100
            self.bar.unit = "%"
            self.bar.write(event.message, file=sys.stderr)
        elif event.kind == EventKind.STEP:
            self.bar.update(int(event.progress * 100) - self.bar.n)
            self.bar.set_postfix(step=event.step, epoch=event.epoch, loss=f"{event.loss:.4f}", refresh=False)
        elif event.kind == EventKind.EPOCH and event.val_dice is not None:
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}", val_dice=f"{event.val_dice:.3f}")
        elif event.kind == EventKind.FINISHED:
            self.bar.write(event.message, file=sys.stderr)

    def advance(self, result):
        self.bar.update(1)
        return result
