"""Writing a file so that a failed or interrupted write leaves no partial file and any old file intact."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

PROBE_PREFIX = ".napari-pix2pix-probe."
ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
ZARR_METADATA = {".zgroup", ".zattrs", ".zmetadata", "zarr.json"}
#: Errors of the disk being written (full, read-only, quota, too large): reported as one line.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.ENAMETOOLONG, errno.EIO}


def _temporary_prefix(target: Path) -> str:
    """Hidden, named after the target (cut short, so long names still fit) and the writing process."""
    return f".{target.name[:80]}.{os.getpid()}."


def check_name(target: Path) -> None:
    """Raise ``InputError`` if ``target``'s name is too long for its file system."""
    try:
        name_max = os.pathconf(target.parent, "PC_NAME_MAX") if target.parent.is_dir() else 255
    except (OSError, ValueError):
        name_max = 255
    if len(target.name.encode()) > name_max:
        raise InputError(f"cannot write {target}: its name is longer than the {name_max} bytes this file system allows")


def check_target(target: Path) -> None:
    """Raise ``InputError`` if ``target`` cannot be a file this program writes (checked without writing)."""
    check_name(target)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name inside it")
    if target.exists() and not target.is_file():
        raise InputError(f"{target} is not a regular file (a device or a pipe?); give the path of a file to write")
    if not target.parent.exists():
        raise InputError(f"cannot write {target}: the folder {target.parent} does not exist")


def check_target_folder(target: Path) -> None:
    """Raise ``InputError`` if ``target`` cannot be a Zarr folder this program writes: an existing
    one is replaced only when it is an OME-Zarr image of the kind this program writes (a group whose
    only array is "0", with 'multiscales' metadata), so no other store, or part of one, is lost."""
    check_name(target)
    if target.exists() or target.is_symlink():
        problem = _not_replaceable(target)
        if problem is not None:
            raise InputError(f"{target} {problem}; it is kept: choose a new name ending in .zarr")
    if not target.parent.exists():
        raise InputError(f"cannot write {target}: the folder {target.parent} does not exist")


def _not_replaceable(target: Path) -> str | None:
    """Why the existing ``target`` must not be replaced by an OME-Zarr image; None if it may."""
    if not target.is_dir() or not any((target / m).exists() for m in ZARR_MARKERS):
        return "exists and is not a Zarr store"
    if _is_zarr_array(target):
        return "is a Zarr array, not an OME-Zarr image of the kind napari-pix2pix writes (a group with one array, '0')"
    held = sorted(entry.name for entry in target.iterdir() if entry.name not in ZARR_METADATA)
    image = held == ["0"] and _is_zarr_array(target / "0") and "multiscales" in _group_attributes(target)
    if image:
        return None
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    return (
        f"is a Zarr store that holds {shown or 'nothing'}, not an OME-Zarr image of the kind napari-pix2pix "
        "writes (one array, '0'), so replacing it could delete other data"
    )


def _is_zarr_array(folder: Path) -> bool:
    if (folder / ".zarray").is_file():
        return True
    return _read_json(folder / "zarr.json").get("node_type") == "array"


def _group_attributes(folder: Path) -> dict:
    """The attributes of the Zarr group at ``folder`` (format 2 or 3; NGFF 0.5 keeps them under 'ome')."""
    attributes = _read_json(folder / ".zattrs") or _read_json(folder / "zarr.json").get("attributes", {})
    if not isinstance(attributes, dict):
        return {}
    ome = attributes.get("ome")
    return {**attributes, **ome} if isinstance(ome, dict) else attributes


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store_root(path: Path) -> Path | None:
    """The outermost Zarr store that ``path`` is (part of), or None when it is in none."""
    root = None
    for folder in (path, *path.parents):
        if not any((folder / m).exists() for m in ZARR_MARKERS):
            break
        root = folder
    return root


def check_writable(path: str | os.PathLike, needed_bytes: int = 0) -> None:
    """Raise ``InputError`` now, before any long work, if ``path`` could not be written: a folder that
    is missing or read-only, a name too long for the file system, or (roughly) too little free space."""
    target = Path(path)
    if str(target).lower().endswith(".zarr"):
        check_target_folder(target)
    else:
        check_target(target)
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"cannot write in {target.parent}: {error.strerror or error}") from None
    free = shutil.disk_usage(target.parent).free
    if needed_bytes > free:
        raise InputError(
            f"not enough room for {target}: it needs about {needed_bytes / 1e6:,.0f} MB and "
            f"{free / 1e6:,.0f} MB are free in {target.parent}"
        )


def remove_stale_temporaries(target: Path) -> None:
    """Remove temporary files of ``target`` left by writers that no longer run (killed by SIGKILL)."""
    prefix = f".{target.name[:80]}."
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid, _, rest = entry.name[len(prefix) :].partition(".")
            if ".tmp" in rest and pid.isdigit() and not _running(int(pid)):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)  # a Zarr folder
                else:
                    entry.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed to disk and renamed to ``path``.

    The temporary file is hidden (a leading dot) and removed if the block raises (the command line
    turns SIGTERM into an exception too), so a reader of ``path`` sees either the old file or the
    complete new one; one left by a killed process is removed by the next write of that file. The
    new file keeps the mode of the file it replaces, or gets the usual mode for the user's umask.
    """
    target = Path(path)
    check_target(target)
    remove_stale_temporaries(target)
    try:
        fd, name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=suffix, dir=target.parent)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else _default_mode())
        os.replace(tmp, target)
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        raise InputError(f"cannot write {target}: {error.strerror or error}; the old file, if any, is kept") from None
    finally:
        tmp.unlink(missing_ok=True)


def _default_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
