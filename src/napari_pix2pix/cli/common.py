"""What the commands share: the progress bar, output checks, and signals turned into exceptions."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import InputError

if TYPE_CHECKING:
    from ..training.events import TrainingEvent

T = TypeVar("T")

EXIT_BAD_INPUT = 2


def make_folder(folder: Path, option: str) -> None:
    """Create ``folder`` (and its parents) for outputs, checking that files can be written in it;
    ``InputError`` in one line if it is a file, lies under a file, or cannot be written."""
    import tempfile

    from ..io.atomic import PROBE_PREFIX

    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {folder} is a file, not a folder; give a folder for the outputs")
    above = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if above is not None:
        raise InputError(f"{option} {folder} cannot be made: {above} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"cannot write in {option} {folder}: {error.strerror or error}") from None


@contextlib.contextmanager
def warnings_as_lines(command: str, show: bool = True) -> Iterator[None]:
    """The engine's warnings (``warnings.warn``) as one line each on stderr, above any progress bar
    (none where ``show`` is False: the ranks of a torchrun group other than 0)."""
    import warnings

    from tqdm import tqdm

    from ..prediction.rescale import RescalingNote

    def line(message: Warning | str, *args: object, **kwargs: object) -> None:
        if show:
            kind = "note" if isinstance(message, RescalingNote) else "warning"
            tqdm.write(f"napari-pix2pix {command}: {kind}: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = line
        yield


def check_output(out: str, *inputs: str | None) -> None:
    """Refuse an output that would replace one of the inputs, hold one (a Zarr store), lie inside the
    Zarr store of one, or that is not a regular file."""
    from ..io.atomic import check_name, store_root

    check_name(Path(out))
    target = Path(out).resolve()
    for given in filter(None, inputs):
        source = Path(given).resolve()
        if source == target:
            raise InputError(f"--out {out} is also an input; choose another file name so the input is kept")
        if target in source.parents:
            raise InputError(f"--out {out} holds the input {given}, which replacing it would delete; choose a new name")
        root = store_root(source)
        if root is not None and target.is_relative_to(root):
            raise InputError(f"--out {out} is inside the Zarr store of the input {given}; choose a new name outside it")
    if target.exists() and not target.is_file() and not out.rstrip("/").lower().endswith(".zarr"):
        raise InputError(f"--out {out} is not a regular file; give the path of a file to write")


@contextlib.contextmanager
def signal_handlers(
    handler: Callable[[int, FrameType | None], Any], signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
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


def terminate(number: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


class Progress:
    """A tqdm progress bar on stderr that understands training events and prediction slices."""

    def __init__(self, quiet: bool, description: str, total: int | None = None, unit: str = "step"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.silent = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def training_event(self, event: TrainingEvent) -> None:
        from ..training.events import EventKind

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

    def advance(self, result: T) -> T:
        self.bar.update(1)
        return result
