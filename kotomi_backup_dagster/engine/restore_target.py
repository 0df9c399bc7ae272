"""What a restore may put its file over: an existing SQLite database, or nothing (a new file).

A restore renames its checked file onto the target's name. Anything else found at that name
is refused, `--force` or not, with one line saying what it is and what to give instead
(ConfigError: exit 2 in the CLI, the failed step's headline in Dagster), before anything is
downloaded or written:

- a symlink (even to a database: a restore works on the name it is given, never elsewhere),
  a folder, a device, a FIFO, a socket: anything but a regular file;
- a regular file with other names (hard links): replacing this name would leave the others
  on the old file (its `<db>.before-restore-*` copy, linked by a restore killed just before
  its rename, is not counted);
- a regular file that is not a SQLite database: its first 100 bytes are not a SQLite header
  (magic, a valid page size, versions, the fixed payload fractions). An empty file passes:
  SQLite opens it as an empty database, and nothing is lost by replacing it;
- SQLite's own files beside a database (`<db>-wal`, `<db>-shm`, `<db>-journal`).

How it is checked: the folder is opened once, the kernel resolving its path (`..`, symlinked
folders), and its real path and identity (device, inode) are kept; the entry is looked at
without following a symlink, then opened `O_NOFOLLOW | O_NONBLOCK` (a FIFO or a device is never
read, an open never blocks) and `fstat`-ed, so the bytes read are those of the entry that was
looked at. SQLite is never asked: opening a database can write to it (a WAL checkpoint) or
beside it (a -shm file). `recheck` compares the folder and the entry again just before the
rename; a new file is created with `link` (never over an entry that appeared meanwhile).

What stays open: between the last `recheck` and the rename of an existing database (two
system calls), a process that can write the target's folder or a folder above it may put
another entry at the name, or another folder at the path; the rename then replaces that entry
(a rename never writes through a symlink or into a file). Such a process can already remove
or replace anything in those folders itself.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
COMPANIONS = ("-wal", "-shm", "-journal")  # SQLite's files beside a database
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class RestoreTarget:
    """A checked target: `path` is its folder's real path and the name as given."""

    path: Path
    folder_stat: os.stat_result
    # The database that will be replaced; None: nothing is there, a new file is created.
    file_stat: os.stat_result | None

    @property
    def replaces(self) -> bool:
        return self.file_stat is not None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def what(self) -> str:
        return "replace the database" if self.replaces else "create a new file"


def check_target(path: Path) -> RestoreTarget:
    """`path` checked as a restore's target (see the module docstring); ConfigError, one line
    saying what is there and what to give, for anything but a SQLite database or nothing."""
    name = path.name
    if name in ("", ".", ".."):
        raise ConfigError(f"cannot restore to {path}: give a file's path, not a folder's")
    try:  # O_PATH: only what a rename needs of the folder (no right to list it)
        folder_fd = os.open(path.parent, _FOLDER_FLAGS)
    except ValueError:  # a NUL in the path
        raise ConfigError(f"cannot restore to {path!r}: not a path") from None
    except FileNotFoundError:
        raise ConfigError(
            f"cannot restore to {path}: directory {path.parent} does not exist"
        ) from None
    except NotADirectoryError:
        raise ConfigError(f"cannot restore to {path}: {path.parent} is not a folder") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot restore to {path}: cannot open {path.parent} ({exc.strerror})"
        ) from None
    try:
        folder_stat = os.fstat(folder_fd)
        target = _real_folder(folder_fd, path.parent) / name
        _refuse_companion(folder_fd, target)
        try:
            entry = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            return RestoreTarget(target, folder_stat, None)
        except OSError as exc:  # a name too long, a folder we may not search...
            raise ConfigError(f"cannot restore to {target}: {exc.strerror}") from None
        what = _not_a_file(entry.st_mode)
        if what:
            raise ConfigError(
                f"cannot restore to {target}: it is {what}; give the database file's own path "
                "(or a new file's)"
            )
        others = entry.st_nlink - 1 - _kept_copies(target, entry)
        if others > 0:
            raise ConfigError(
                f"cannot restore to {target}: the file has {others + 1} names (hard links) "
                "and a restore would replace this one only; remove the others first, or give "
                "a new file's path"
            )
        head = _first_bytes(folder_fd, name, entry, target)
        if head and not is_sqlite_header(head):
            raise ConfigError(
                f"cannot restore to {target}: it is not a SQLite database (no SQLite header); "
                "a restore replaces only a database: give the database's path, or a new file's"
            )
        return RestoreTarget(target, folder_stat, entry)
    finally:
        os.close(folder_fd)


def recheck(target: RestoreTarget) -> None:
    """The folder and the entry are still those `check_target` saw (ConfigError if not)."""
    try:
        folder = os.stat(target.folder)
    except OSError:
        folder = None
    if folder is None or _identity(folder) != _identity(target.folder_stat):
        raise ConfigError(
            f"{target.folder} changed while the restore ran (another folder is at its path); "
            f"{target.path} was not replaced: check the folder and restore again"
        )
    try:
        entry: os.stat_result | None = os.lstat(target.path)
    except FileNotFoundError:
        entry = None
    if target.file_stat is None:
        if entry is not None:
            raise ConfigError(
                f"{target.path} appeared while the restore ran and was not replaced: "
                "restore again, or to another new file"
            )
    elif entry is None or _identity(entry) != _identity(target.file_stat):
        raise ConfigError(
            f"{target.path} was replaced or removed while the restore ran and was not "
            "replaced again: check it and restore again"
        )


def create_new(restored: Path, target: RestoreTarget) -> None:
    """Give `restored` the new target's name, never over an entry that appeared meanwhile
    (link fails when the name exists); where a filesystem has no hard links, a rename after
    a last `recheck`."""
    try:
        os.link(restored, target.path, follow_symlinks=False)
    except FileExistsError:
        recheck(target)  # says what appeared
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        recheck(target)
        os.replace(restored, target.path)
        return
    os.unlink(restored)


def is_sqlite_header(head: bytes) -> bool:
    """The fixed parts of SQLite's 100-byte file header (sqlite.org/fileformat.html)."""
    if len(head) < HEADER_SIZE or not head.startswith(SQLITE_MAGIC):
        return False
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    return (
        512 <= page_size <= 65536
        and page_size & (page_size - 1) == 0
        and head[18] in (1, 2)
        and head[19] in (1, 2)
        and head[21:24] == b"\x40\x20\x20"
    )


def same_folder(target: RestoreTarget, folder: Path) -> bool:
    """Whether `target` is in `folder` (by identity: whatever path leads to either)."""
    try:
        return _identity(os.stat(folder)) == _identity(target.folder_stat)
    except OSError:
        return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _real_folder(folder_fd: int, given: Path) -> Path:
    try:
        return Path(os.readlink(f"/proc/self/fd/{folder_fd}"))
    except OSError:  # no /proc: the path as resolved now
        return Path(os.path.realpath(given))


def _refuse_companion(folder_fd: int, target: Path) -> None:
    for suffix in COMPANIONS:
        stem = target.name.removesuffix(suffix)
        if stem != target.name and stem and _exists(folder_fd, stem):
            raise ConfigError(
                f"cannot restore to {target}: it is the {suffix} file of {target.with_name(stem)} "
                f"(SQLite's own); give the database's path ({target.with_name(stem)}), or a new "
                "file's"
            )


def _exists(folder_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _kept_copies(target: Path, entry: os.stat_result) -> int:
    """The names of this very file a killed restore left beside it: a restore links the
    current file to `<db>.before-restore-<time>` just before its rename."""
    prefix = f"{target.name}.before-restore-"
    try:
        with os.scandir(target.parent) as found:
            return sum(
                1
                for e in found
                if e.name.startswith(prefix)
                and _identity(e.stat(follow_symlinks=False)) == _identity(entry)
            )
    except OSError:
        return 0


def _not_a_file(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symlink, and a restore replaces only a regular file"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "not a regular file"


def _first_bytes(folder_fd: int, name: str, entry: os.stat_result, target: Path) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=folder_fd)
    except OSError as exc:
        raise ConfigError(
            f"cannot restore to {target}: cannot read it ({exc.strerror}); "
            "run the restore as its owner"
        ) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or _identity(opened) != _identity(entry):
            raise ConfigError(
                f"cannot restore to {target}: it changed while it was checked; restore again"
            )
        return os.pread(fd, HEADER_SIZE, 0)
    finally:
        os.close(fd)
