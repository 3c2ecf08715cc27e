"""Checks on input and output paths, and atomic writes (temp file beside the target, renamed)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from emo_rt.errors import InputError


def check_input_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return `path` as a Path if it is a readable, non-empty file; else raise InputError.

    `what` names the file for the message ("audio", "image").
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a directory, not a file: {path}")
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except OSError as e:
        raise InputError(f"cannot read {what} file {path}: {e.strerror or e}") from e
    if not first:
        raise InputError(f"{what} file is empty (0 bytes): {path}")
    return path


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Raise InputError unless a file can be created at `path` (directory exists and is writable).

    Creates and removes a probe file, because `os.access` says yes to root on read-only mounts.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} path is a directory; give a file name: {path}")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise InputError(f"{what} directory does not exist: {directory} (create it first)")
    if not directory.is_dir():
        raise InputError(f"{what} directory is not a directory: {directory}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".probe")
    except OSError as e:
        raise InputError(f"cannot write to {what} directory {directory}: {e.strerror or e}") from e
    os.close(fd)
    os.unlink(probe)
    return path


def temp_path_beside(path: Path, suffix: str) -> Path:
    """Create an empty hidden temp file in `path`'s directory (same filesystem, so a rename is atomic)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{suffix}")
    except OSError as e:
        raise InputError(f"cannot write to output directory {path.parent}: {e.strerror or e}") from e
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Yield a temp path to write; it replaces `path` only if the block finishes without error."""
    path = check_output_path(path, what)
    tmp = temp_path_beside(path, path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
