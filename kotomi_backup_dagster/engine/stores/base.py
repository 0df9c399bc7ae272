"""The one interface every destination implements (local disk, S3, GCS).

Keys are '/'-separated paths relative to the store's root URL. A store knows nothing of
SQLite, manifests or retention: that lives in `catalog.py`, above every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import BackupError, ConfigError


class ObjectNotFound(KeyError):
    """The key does not exist on the store."""


class UnreadableObject(BackupError):
    """Something is at the key but cannot be read as an object (a folder, a symlink, a file
    this process may not read): a problem of that one entry, not of the store."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex; "" when the store cannot tell without reading the object
    requests: int = 1


# `stat_objects`: from this many keys in one folder, one listing answers them all (packs).
LIST_FROM = 4


def by_folder(keys: Sequence[str]) -> dict[str, list[str]]:
    """Keys grouped by the folder that holds them: {folder: [names]}, in the given order."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        folder, _, name = key.strip("/").rpartition("/")
        groups.setdefault(folder, []).append(name)
    return groups


def key_parts(url: str, key: str) -> list[str]:
    """The parts of `key`; a key with '.' or '..' is refused in every store alike (a
    manifest read from the store is untrusted input, and names its objects' keys)."""
    parts = [p for p in key.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"{url}: refusing key {key!r}, it would leave the store")
    return parts


def join_key(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


@runtime_checkable
class BackupStore(Protocol):
    @property
    def url(self) -> str:
        """Where the store points, safe to print (never holds credentials)."""
        ...

    def preflight(self) -> None:
        """Fail fast, with one clear line, if backups cannot be written here."""
        ...

    def put_file(self, key: str, source: Path, *, sha256: str) -> StoredObject:
        """Stream `source` to `key`; confirm what landed has `sha256` and the same size."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically (readers see all of it or none)."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def open_read(self, key: str) -> BinaryIO:
        """Stream an object; raises ObjectNotFound."""
        ...

    def list_children(self, prefix: str) -> list[str]:
        """Names directly under `prefix/` (files and 'directories'), sorted."""
        ...

    def stat_objects(self, keys: Sequence[str]) -> dict[str, StoredObject]:
        """What is stored at each key, without reading it: its size, and its sha256 where
        the store gives one for free (else ""). Keys with no object are left out. Keys that
        share a folder may be answered by one listing instead of a request each."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key` and everything below `key/` (like removing a directory)."""
        ...

    def sweep_partials(self, prefix: str, before: float) -> list[str]:
        """Remove what writes killed mid-way left directly under `prefix` before `before`
        (a time.time() value); their names. Only a local store has such leftovers."""
        ...
