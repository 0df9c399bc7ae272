"""File operations the engine relies on.

- Durable writes: a temp name, fsync, rename, fsync the directory.
- Private files: whatever may hold database content or page hashes (staging, scratch, caches,
  local stores) is created 0600 in folders created 0700, whatever the umask.
- A full disk is reported as one `DiskFull` line naming the path, never as damage.
- A folder a process works in carries an exclusive `flock` on the folder itself while it
  lives (the kernel drops it when the process dies): what a killed run left is told apart
  from another run's work by that lock alone, and no lock file is ever left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError, DiskFull, is_no_space

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


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
def atomic_writer(target: Path, *, create_only: bool = False) -> Iterator[BinaryIO]:
    """Yield a file that appears at `target` only once it is complete and on disk.

    A crash at any point leaves either the old content or none, never a torn file; the
    temp name starts with '.' and ends with '.partial' so listings can ignore it.
    `create_only`: the finished file is hard-linked to `target`, which fails with
    FileExistsError when anything is there already, so nothing is ever replaced (on a file
    system without hard links, a check just before the rename).
    """
    private_dir(target.parent, tighten=False)
    # mkstemp creates the file 0600, whatever the umask.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if create_only:
            _link_new(tmp, target)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(target):  # no hard links here: the next best thing
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(tmp, target)


def atomic_write_bytes(target: Path, data: bytes, *, create_only: bool = False) -> None:
    with atomic_writer(target, create_only=create_only) as fh:
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


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """`path` as a folder; the folders made here (`path` and missing parents) are 0700
    whatever the umask, and an existing `path` is tightened to 0700 when `tighten`.

    Refuses, with one line, a `path` that is not a folder (exit 2: a setting points at it)."""
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process: leave its mode alone
        except OSError as exc:
            raise _unusable(folder, exc) from None
        os.chmod(folder, PRIVATE_DIR)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder (a file stands where a folder must)")
    if tighten and not missing and stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
        with contextlib.suppress(PermissionError):  # not ours: its files are still 0600
            os.chmod(path, PRIVATE_DIR)
    return path


def _unusable(path: Path, exc: OSError) -> Exception:
    if is_no_space(exc):
        return DiskFull(path)
    if isinstance(exc, PermissionError):
        return ConfigError(f"cannot create {path}: permission denied; fix its owner or mode")
    return ConfigError(f"cannot create {path}: {exc.strerror or exc}")


def open_private(path: Path) -> BinaryIO:
    """`path` opened for writing (created or truncated) with mode 0600 whatever the umask;
    never through a symlink."""
    return open(path, "wb", opener=_private_opener)  # the caller closes it


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600, for a writer that opens it by name (SQLite)."""
    open_private(path).close()


def write_private(path: Path, data: bytes) -> None:
    """Write a small file, 0600; a full disk is one `DiskFull` line."""
    with no_space_is_disk_full(path), open_private(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def no_space_is_disk_full(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn a write that found no room (ENOSPC, EDQUOT, EFBIG) into one `DiskFull` line."""
    try:
        yield
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull(path, needed) from None
        raise


def require_room(directory: Path, needed: int) -> None:
    """Refuse at once, with one `DiskFull` line, work that cannot fit in `directory` (or,
    while it does not exist yet, the folder it will be made in)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DiskFull(directory, needed, free)


def pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    """`os.pwrite` until every byte is written: a short write is retried, and a disk that
    cannot take the rest raises (ENOSPC) instead of leaving a hole."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(28, os.strerror(28))  # ENOSPC: no progress is no room
        view = view[written:]
        offset += written


# Locks of folders this process works in: folder -> the descriptor holding its flock.
_dir_locks: dict[Path, int] = {}
_dir_locks_guard = threading.Lock()


def try_lock_dir(directory: Path) -> bool:
    """Take the exclusive lock of a folder for this process; False when another process
    (or another holder in this one) has it. Held until `unlock_dir` or the process ends."""
    with _dir_locks_guard:
        if directory in _dir_locks:
            return False
        try:
            fd = _open_dir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return False  # the folder is gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        _dir_locks[directory] = fd
        return True


def _open_dir(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def unlock_dir(directory: Path) -> None:
    with _dir_locks_guard:
        fd = _dir_locks.pop(directory, None)
    if fd is not None:
        os.close(fd)


def holds_lock(directory: Path) -> bool:
    """True when this process holds the folder's lock."""
    with _dir_locks_guard:
        return directory in _dir_locks


@contextlib.contextmanager
def dir_mutex(directory: Path) -> Iterator[None]:
    """A short exclusive section over a folder's contents (waits for other processes).
    Not for a folder this process holds with `try_lock_dir` (it would wait for itself)."""
    fd = _open_dir(directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_if_abandoned(directory: Path) -> bool:
    """Remove a scratch folder nobody holds (its process was killed); False if held."""
    if not try_lock_dir(directory):
        return False
    try:
        shutil.rmtree(directory, ignore_errors=True)
    finally:
        unlock_dir(directory)
    return True


def sweep_abandoned(parent: Path, prefix: str) -> list[str]:
    """Remove the folders `prefix*` under `parent` that no live process holds; their names."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if (
            entry.name.startswith(prefix)
            and entry.is_dir(follow_symlinks=False)
            and remove_if_abandoned(Path(entry.path))
        ):
            removed.append(entry.name)
    return removed


def sweep_scratch(parent: Path, prefix: str) -> list[str]:
    """`sweep_abandoned` under the parent's mutex (a folder being made is not yet locked)."""
    if not parent.is_dir():
        return []
    with dir_mutex(parent):
        return sweep_abandoned(parent, prefix)


@contextlib.contextmanager
def scratch_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A private folder under `parent`, locked while in use and removed after; folders of
    the same kind that killed runs left are removed first."""
    private_dir(parent, tighten=False)
    with dir_mutex(parent):
        sweep_abandoned(parent, prefix)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # 0700
        try_lock_dir(folder)
    try:
        yield folder
    finally:
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            unlock_dir(folder)
