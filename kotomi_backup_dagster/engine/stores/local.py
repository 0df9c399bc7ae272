"""Local-filesystem store: a directory tree, written with temp files, fsync and rename.

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
from pathlib import Path
from typing import BinaryIO

from ..errors import BackupError, ConfigError, DiskFull, is_no_space
from ..fsutil import atomic_write_bytes, atomic_writer, private_dir
from .base import ObjectNotFound, StoredObject, UnreadableObject, key_parts

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
            with source.open("rb") as src, atomic_writer(target) as out:
                while block := src.read(COPY_BLOCK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                if digest.hexdigest() != sha256:
                    raise BackupError(
                        f"{source.name} does not match its checksum while copying to {self.url}; "
                        "the staged archive is damaged: take a new backup"
                    )
        except OSError as exc:
            raise _os_error(exc, self.url, key, needed=source.stat().st_size) from exc
        landed = target.stat().st_size
        if landed != size:
            raise BackupError(f"{self.url}/{key}: wrote {size} bytes but {landed} landed")
        return StoredObject(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self._path(key), data)
        except OSError as exc:
            raise _os_error(exc, self.url, key, needed=len(data)) from exc

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            try:
                return fh.read()
            except OSError as exc:
                raise _os_error(exc, self.url, key, doing="reading") from exc

    def open_read(self, key: str) -> BinaryIO:
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
