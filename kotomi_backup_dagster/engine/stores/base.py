"""The one interface every destination implements (local disk, S3, GCS).

Keys are '/'-separated paths relative to the store's root URL. A store knows nothing of
SQLite, manifests or retention: that lives above every backend (layout.py, objects.py).

Every write is create-only (docs/immutability.md): a key that holds an object is never
replaced, by a store's own rule where it has one (S3 `If-None-Match: *`, GCS
`ifGenerationMatch=0`, a local hard link that fails on an existing name). Writing the same
bytes again (a retry whose first answer was lost, an upload re-run) finds them there and
succeeds; other bytes at the key are `ObjectExists`. Each write says which version it made
(S3 version id, GCS generation; "" where the store keeps no versions), and a read may ask for
that version, so an object rewritten later cannot stand in for the original.

Stores that can lock objects against deletion (S3 Object Lock, GCS object retention) also
implement `LockingStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import BackupError, ConfigError


class ObjectNotFound(KeyError):
    """The key does not exist on the store."""


class UnreadableObject(BackupError):
    """Something is at the key but cannot be read as an object (a folder, a symlink, a file
    this process may not read): a problem of that one entry, not of the store."""


class ObjectExists(BackupError):
    """A write-once key holds other bytes already: it is never replaced."""


class ObjectLocked(BackupError):
    """The store refused to delete an object because its lock (retention) has not expired."""

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex; "" when the store cannot tell without reading the object
    requests: int = 1
    version: str = ""  # S3 version id, GCS generation; "" where the store keeps none


@dataclass(frozen=True)
class ObjectLock:
    """How long the store refuses to delete or change one object version. `mode` is
    "compliance" (nobody can shorten or remove it: S3 COMPLIANCE, GCS Locked) or "governance"
    (a holder of a special right can: S3 GOVERNANCE, GCS Unlocked)."""

    mode: str
    until: datetime


@dataclass(frozen=True)
class ObjectState:
    """One key as a listing of the store's versions shows it now."""

    key: str
    version: str  # of the current version ("" where the store keeps no versions)
    size: int
    stored_at: datetime  # the store's clock: when the current version was written
    first_stored_at: datetime  # when the oldest version still kept was written
    versions: int = 1  # how many versions of the key the store keeps (delete markers apart)
    hidden: bool = False  # the current version is a delete marker: the key looks deleted
    lock: ObjectLock | None = None  # where the listing tells (GCS); None: ask `lock_of`
    lock_known: bool = False  # True when `lock` comes from the listing (None = unlocked)
    first_version: str = ""  # the oldest version still kept: the original of a write-once key
    contents: int = 1  # how many different contents its versions hold (by ETag/MD5 and size)


@dataclass(frozen=True)
class LockSettings:
    """What a bucket does about locks: whether objects can be locked at all, whether it
    keeps versions, and the lock every new object gets from the first second (the floor)."""

    enabled: bool
    versioning: bool
    default_mode: str | None = None  # "compliance" or "governance"
    default_period: timedelta | None = None


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
        """Stream `source` to a new `key`; confirm what landed has `sha256` and the same size.
        The same bytes there already: success; other bytes: ObjectExists."""
        ...

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        """Write a small new object atomically (readers see all of it or none); create-only
        as `put_file`."""
        ...

    def get_bytes(self, key: str, version: str = "") -> bytes:
        """The object (that version of it, when given and the store keeps versions)."""
        ...

    def open_read(self, key: str, version: str = "") -> BinaryIO:
        """Stream an object (that version of it); raises ObjectNotFound."""
        ...

    def inventory(self, prefix: str) -> dict[str, ObjectState]:
        """Every key below `prefix/`, at any depth, with its current version, the store's own
        times and how many versions it keeps; keys whose current version is a delete marker
        are included (`hidden`). A store without versions lists what is there."""
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


@runtime_checkable
class LockingStore(Protocol):
    """A store that can lock object versions against deletion for a time (S3 Object Lock,
    GCS object retention). Only the keeper calls `extend_lock`; a lock is never shortened."""

    def lock_settings(self) -> LockSettings:
        """The bucket's lock configuration (one or two requests)."""
        ...

    def lock_of(self, key: str, version: str = "") -> ObjectLock | None:
        """The lock of that version of `key` now, or None when it has none (or has expired)."""
        ...

    def extend_lock(self, key: str, version: str, until: datetime, mode: str) -> ObjectLock:
        """Lock that version of `key` until `until` (in `mode` when it has no lock yet; an
        existing lock keeps its mode). Never shortens: a later lock is left as it is."""
        ...
