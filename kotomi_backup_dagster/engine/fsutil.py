"""Durable file operations: write to a temp name, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Yield a file that appears at `target` only once it is complete and on disk.

    A crash at any point leaves either the old content or none, never a torn file; the
    temp name starts with '.' and ends with '.partial' so listings can ignore it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_writer(target) as fh:
        fh.write(data)


_held: dict[tuple[int, int], int] = {}
_held_lock = threading.Lock()


def held_fd(path: Path) -> int:
    """A read-only descriptor of `path`, opened once per process and never closed while the
    file exists.

    POSIX locks belong to the process: closing any descriptor of a file drops every lock this
    process holds on it, including those of SQLite connections to a live database (SQLite
    works around this for its own descriptors only). Descriptors of files since deleted are
    the only ones closed, when the next one is opened.
    """
    with _held_lock:
        st = os.stat(path)
        held = _held.get((st.st_dev, st.st_ino))
        if held is not None:
            return held
        fd = os.open(path, os.O_RDONLY)
        for key, old in list(_held.items()):
            if os.fstat(old).st_nlink == 0:
                del _held[key]
                os.close(old)
        st = os.fstat(fd)
        _held[(st.st_dev, st.st_ino)] = fd
        return fd
