"""Checks on input and output paths, and the atomic writers every module uses: a file or a directory is
written under a hidden temporary name beside its target and renamed into place when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from emo_rt.errors import InputError


def short_name(path: str | os.PathLike[str]) -> str:
    """A folder as cards name it: its last two parts (`corpus1/shards`), not this machine's path."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


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


def check_output_dir(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Raise InputError unless `path` is a folder or can be made as one: the nearest existing folder
    above it must be writable (probed, as in `check_output_path`). Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} exists and is not a directory")
    nearest = path if path.exists() else (path.parent if str(path.parent) else Path("."))
    while not nearest.exists():  # the missing folders are made with it
        nearest = nearest.parent
    if not nearest.is_dir():
        raise InputError(f"cannot make {what} {path}: {nearest} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=nearest, prefix=f".{path.name}.", suffix=".probe"))
    except OSError as e:
        raise InputError(f"cannot write to {nearest}: {e.strerror or e}") from e
    return path


def check_new_directory(path: str | os.PathLike[str], what: str = "output") -> Path:
    """`check_output_dir`, and `path` must be absent or empty."""
    path = check_output_dir(path, what)
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{what} {path} exists and is not empty: give a new or empty directory")
    return path


_UMASK = os.umask(0)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)
PARTIAL_MARK = ".part"  # in the name of every temporary file the writers below make


def remove_partials(directory: str | os.PathLike[str]) -> int:
    """Delete the temporary files a killed writer left in `directory`; returns how many."""
    stale = [p for p in Path(directory).glob(f".*{PARTIAL_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def temp_path_beside(path: Path, suffix: str) -> Path:
    """Create an empty hidden temp file in `path`'s directory (same filesystem, so a rename is atomic),
    with the permissions a plain new file gets (mkstemp's are owner-only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{PARTIAL_MARK}{suffix}")
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden temp path beside `path` (same extension, so writers that go by it still do);
    it replaces `path` if the block finishes, and is removed if it raises."""
    path = Path(path)
    tmp = temp_path_beside(path, path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: object, indent: int | None = 1, **dumps) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent, **dumps) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden partial directory beside `path`; when the block finishes its files are fsynced
    and it replaces `path` (and whatever was there); if the block raises it is removed."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        _fsync_tree(partial)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
            os.rename(partial, path)
            shutil.rmtree(old)
        else:
            os.rename(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    """Flush every file and folder under `directory` to disk (a rename after this survives a crash)."""
    for item in sorted(directory.rglob("*"), reverse=True) + [directory]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """A user's output file: checked first (one InputError line), then written as `atomic_path`."""
    path = check_output_path(path, what)
    with atomic_path(path) as tmp:
        yield tmp
