"""Local-filesystem store: a directory tree, written with temp files, fsync and a hard link.

Create-only: a finished temp file is hard-linked to its key, which fails when the name
exists, so an object is never replaced (the same bytes there already count as written). This
guards against our own mistakes and a confused re-run, not against the host: whoever can
write the folder can delete it. A folder keeps no versions and locks nothing; a copy the
protected host cannot destroy needs S3 or GCS (docs/immutability.md).

The tree is untrusted input like any store: a key never leaves the root ('..' is refused) and
nothing below the root is followed through a symlink (a backup folder that is a symlink to
elsewhere is refused, never read, written or deleted through). The root itself may be a
symlink: it is resolved when the store is opened. Folders are made 0700 and files 0600.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import BackupError, ConfigError, DiskFull, is_no_space
from ..fsutil import atomic_write_bytes, atomic_writer, private_dir
from .base import (
    ObjectExists,
    ObjectNotFound,
    ObjectState,
    StoredObject,
    UnreadableObject,
    key_parts,
)

COPY_BLOCK = 1 << 20


class LocalStore:
    def __init__(self, root: Path) -> None:
        absolute = root if root.is_absolute() else Path.cwd() / root
        try:
            self.root = absolute.resolve()
        except (OSError, RuntimeError):  # a symlink loop: every use says so in one line
            self.root = absolute

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        """The path of `key`; refuses keys that leave the root and symlinks below it."""
        parts = key_parts(self.url, key)
        probe = self.root
        for part in parts:
            probe = probe / part
            try:
                mode = os.lstat(probe).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing further exists: nothing to follow
            if stat.S_ISLNK(mode):
                raise UnreadableObject(
                    f"{self.url}/{'/'.join(parts)}: {probe} is a symlink; a store never follows "
                    "one (replace it with the real folder or remove it)"
                )
        return self.root.joinpath(*parts)

    def preflight(self) -> None:
        try:
            try:
                private_dir(self.root, tighten=False)
            except DiskFull:
                raise
            except ConfigError as exc:
                raise ConfigError(
                    f"destination {self.url} is not usable ({exc}); "
                    "choose another KOTOMI_BACKUP_URL"
                ) from None
            # An unnamed file (O_TMPFILE where the filesystem has it): a killed preflight
            # leaves nothing behind.
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except PermissionError as exc:
            raise ConfigError(
                f"destination {self.url} is not writable (permission denied); "
                "fix its owner/mode or choose another KOTOMI_BACKUP_URL"
            ) from exc
        except OSError as exc:
            if is_no_space(exc):
                raise DiskFull(self.root) from None
            raise ConfigError(
                f"destination {self.url} is not usable: {exc.strerror or exc}; "
                "choose another KOTOMI_BACKUP_URL"
            ) from exc

    def put_file(self, key: str, source: Path, *, sha256: str) -> StoredObject:
        target = self._path(key)
        digest = hashlib.sha256()
        size = 0
        try:
            with source.open("rb") as src, atomic_writer(target, create_only=True) as out:
                while block := src.read(COPY_BLOCK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                if digest.hexdigest() != sha256:
                    raise BackupError(
                        f"{source.name} does not match its checksum while copying to {self.url}; "
                        "the staged archive is damaged: take a new backup"
                    )
        except FileExistsError:
            self._same_or_refuse(key, target, sha256)
        except OSError as exc:
            raise _os_error(exc, self.url, key, needed=source.stat().st_size) from exc
        landed = target.stat().st_size
        if landed != size:
            raise BackupError(f"{self.url}/{key}: wrote {size} bytes but {landed} landed")
        return StoredObject(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        target = self._path(key)
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            atomic_write_bytes(target, data, create_only=True)
        except FileExistsError:
            self._same_or_refuse(key, target, sha256)
        except OSError as exc:
            raise _os_error(exc, self.url, key, needed=len(data)) from exc
        return StoredObject(key=key, size=len(data), sha256=sha256)

    def _same_or_refuse(self, key: str, target: Path, sha256: str) -> None:
        """A write found its key taken: the same bytes (a re-run) are fine, others refused."""
        digest = hashlib.sha256()
        with self.open_read(key) as fh:
            while block := fh.read(COPY_BLOCK):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise ObjectExists(
                f"{self.url}/{key}: another object is there already; a backup's objects are "
                "written once and never replaced"
            )

    def get_bytes(self, key: str, version: str = "") -> bytes:
        with self.open_read(key) as fh:
            try:
                return fh.read()
            except OSError as exc:
                raise _os_error(exc, self.url, key, doing="reading") from exc

    def open_read(self, key: str, version: str = "") -> BinaryIO:
        """A folder keeps one version of each file: `version` is not used."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # turned into a symlink since `_path` looked
                raise UnreadableObject(f"{self.url}/{key} is a symlink; refused") from None
            if isinstance(exc, PermissionError):  # this one entry, not the store
                raise UnreadableObject(f"{self.url}/{key}: permission denied") from None
            raise _os_error(exc, self.url, key, doing="reading") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnreadableObject(f"{self.url}/{key} is not a file")
        return os.fdopen(fd, "rb")

    def inventory(self, prefix: str) -> dict[str, ObjectState]:
        """Regular files below `prefix` (symlinks and partial files left out), with their
        modification times; one version each."""
        found: dict[str, ObjectState] = {}
        base = self._path(prefix)
        if not base.is_dir() or base.is_symlink():
            return found
        for folder, dirs, files in os.walk(base):  # never descends into symlinked folders
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(folder, name)
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    continue
                key = "/".join(p for p in [prefix.strip("/"), *path.relative_to(base).parts] if p)
                when = datetime.fromtimestamp(info.st_mtime, UTC)
                found[key] = ObjectState(key, "", info.st_size, when, when)
        return found

    def list_children(self, prefix: str) -> list[str]:
        directory = self._path(prefix)
        try:
            if stat.S_ISLNK(os.lstat(directory).st_mode):
                return []
            return sorted(
                entry.name for entry in os.scandir(directory) if not entry.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _os_error(exc, self.url, prefix, doing="reading") from exc

    def stat_objects(self, keys: Sequence[str]) -> dict[str, StoredObject]:
        """Sizes from the file system (a sha256 would mean reading every file); an entry
        that is not a regular file (a folder, a symlink) counts as no object."""
        found: dict[str, StoredObject] = {}
        for key in keys:
            try:
                info = os.lstat(self._path(key))
            except (FileNotFoundError, NotADirectoryError, UnreadableObject):
                continue
            except OSError as exc:
                raise _os_error(exc, self.url, key, doing="reading") from exc
            if stat.S_ISREG(info.st_mode):
                found[key] = StoredObject(key=key, size=info.st_size, sha256="")
        return found

    def sweep_partials(self, prefix: str, before: float) -> list[str]:
        """Remove temp files of writes killed mid-way (`.<name>.<random>.partial`) directly
        under `prefix` and last touched before `before` (a time.time() value). Other stores
        need nothing of the kind: an interrupted S3 or GCS upload leaves no object."""
        removed = []
        directory = self._path(prefix)
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            partial = entry.name.startswith(".") and entry.name.endswith(".partial")
            if (
                partial
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < before
            ):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            if stat.S_ISDIR(mode):
                shutil.rmtree(path)  # never follows symlinks inside (fd-based on Linux)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, self.url, key, doing="deleting") from exc


def _os_error(
    exc: OSError, url: str, key: str, doing: str = "writing to", needed: int | None = None
) -> BackupError:
    if is_no_space(exc):
        return DiskFull(f"{url}/{key}", needed)
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return ConfigError(
            f"destination {url} is not usable for {doing.split()[0]} ({exc.strerror})"
        )
    if exc.errno == errno.ENOTDIR:
        return ConfigError(f"destination {url} is not usable: a file stands where a folder must")
    if exc.errno in (errno.EISDIR, errno.ELOOP):
        return UnreadableObject(f"{url}/{key}: {exc.strerror}")
    return BackupError(f"{doing} {url}/{key} failed: {exc.strerror or exc}")
