"""Telling the user what happened: napari notifications, and errors (also those carried out of a
worker thread) reported as one message, never as a traceback."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Generator
from typing import ParamSpec, TypeVar

from napari.utils.notifications import show_error, show_info, show_warning

from ..devices import is_out_of_memory
from ..errors import InputError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
Y = TypeVar("Y")
S = TypeVar("S")
R = TypeVar("R")


class WorkerFailure(Exception):
    """Carries a ``RuntimeError`` out of a worker thread.

    superqt takes a ``RuntimeError`` escaping a worker for a deleted Qt object and drops it
    without emitting ``errored`` or ``finished``; torch reports out-of-memory as a RuntimeError.
    """


def run_reporting_failures(
    function: Callable[P, Generator[Y, S, R]], *args: P.args, **kwargs: P.kwargs
) -> Generator[Y, S, R]:
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
    elif is_out_of_memory(error):
        show_error(f"{action}: out of memory. Use a smaller batch size, patch size or tile size, or the CPU.")
    else:
        logger.error("%s failed:\n%s", action, "".join(traceback.format_exception(error)))
        show_error(f"{action} failed unexpectedly: {type(error).__name__}: {error}")


def notify(message: str, warning: bool = False) -> None:
    (show_warning if warning else show_info)(message)
