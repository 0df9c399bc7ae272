"""Local-filesystem store: a directory tree, written with temp files, fsync and rename."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from ..errors import BackupError, ConfigError
from ..fsutil import atomic_write_bytes, atomic_writer
from .base import ObjectNotFound, StoredObject

COPY_BLOCK = 1 << 20


class LocalStore:
    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            root = root.resolve()
        self.root = root

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid key {key!r}")
        return self.root.joinpath(*parts)

    def preflight(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".kotomi-backup-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except PermissionError as exc:
            raise ConfigError(
                f"destination {self.url} is not writable (permission denied); "
                "fix its owner/mode or choose another KOTOMI_BACKUP_URL"
            ) from exc
        except OSError as exc:
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
            raise _os_error(exc, self.url) from exc
        landed = target.stat().st_size
        if landed != size:
            raise BackupError(f"{self.url}/{key}: wrote {size} bytes but {landed} landed")
        return StoredObject(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self._path(key), data)
        except OSError as exc:
            raise _os_error(exc, self.url) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise _os_error(exc, self.url, doing="reading") from exc

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise _os_error(exc, self.url, doing="reading") from exc

    def list_children(self, prefix: str) -> list[str]:
        directory = self._path(prefix)
        try:
            return sorted(
                entry.name for entry in os.scandir(directory) if not entry.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _os_error(exc, self.url, doing="reading") from exc

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
            if partial and entry.is_file() and entry.stat().st_mtime < before:
                Path(entry.path).unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _os_error(exc: OSError, url: str, doing: str = "writing to") -> BackupError:
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return ConfigError(
            f"destination {url} is not usable for {doing.split()[0]} ({exc.strerror})"
        )
    if exc.errno == errno.ENOTDIR:
        return ConfigError(f"destination {url} is not usable: a file stands where a folder must")
    if exc.errno == errno.ENOSPC:
        return BackupError(f"destination {url} is full (no space left on device); free space")
    return BackupError(f"{doing} {url} failed: {exc.strerror or exc}")
