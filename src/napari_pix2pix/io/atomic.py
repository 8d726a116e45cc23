"""Writing a file so that a failed or interrupted write leaves no partial file and any old file intact."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed to disk and renamed to ``path``.

    The temporary file is hidden (a leading dot) and removed if the block raises, so a reader of
    ``path`` sees either the old file or the complete new one. The new file keeps the mode of the
    file it replaces, or gets the usual mode for the user's umask.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name inside it")
    if target.exists() and not target.is_file():
        raise InputError(f"{target} is not a regular file (a device or a pipe?); give the path of a file to write")
    if not target.parent.exists():
        raise InputError(f"cannot write {target}: the folder {target.parent} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else _default_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _default_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
