"""Backup formats: what differs between a full backup (one archive) and a paged one (pages in
shared packs), behind one small interface, as Litestream keeps each destination behind its
`ReplicaClient`. Everything else (the stages' order, staging, retention, drills) is the same.

A format is chosen once:
- for a backup in the making, by its snapshot stage (`settings.backup_format`, recorded in the
  staging folder: `StagedBackup.backup_format`), and every later stage follows that record;
- for a stored backup, by its manifest (`format` 1 or 2): `format_of(manifest)`.

What a format does (`BackupFormat`):

    take      the snapshot its own way, or None for the plain copy (paged: read in place)
    prepare   the archive stage's work on the staged snapshot (full: compress + encrypt;
              paged: hash every page) and the draft manifest
    publisher the upload to one destination (full: the archive, checked, then the manifest;
              paged: new packs, the page map, then the manifest)
    published whether a destination already holds this backup
    fetch     the backup's exact database file from a store, every checksum checked
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ... import __version__
from ..archive import Progress
from ..config import FormatName
from ..manifest import ArchiveInfo, Manifest, VerifyInfo, backup_id_time, rfc3339
from ..settings import BackupSettings
from ..snapshot import Snapshot
from ..staging import SNAPSHOT_INFO, StagedBackup
from ..stores import BackupStore
from ..verify import VerifyReport


@dataclass(frozen=True)
class Prepared:
    """The archive stage's result: the draft manifest (None when the check failed: nothing
    may be uploaded) and the seconds of the format's own work."""

    manifest: Manifest | None
    seconds: float


@dataclass(frozen=True)
class Published:
    """What one destination stored of a backup."""

    bytes: int
    requests: int
    manifest: Manifest  # as written there (a paged backup's names that store's packs)


Publish = Callable[[BackupStore], Published]


class BackupFormat(Protocol):
    name: FormatName

    def take(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        moment: datetime,
        stores: list[BackupStore],
        contact_stores: bool,
        progress: Progress | None,
        durable: bool,
    ) -> tuple[Snapshot | None, str | None]:
        """The snapshot, checked and staged this format's own way; (None, why) when the plain
        copy must be taken instead."""
        ...

    def checked_at_snapshot(self, staged: StagedBackup) -> bool:
        """True when `take` checked the snapshot already (its record is staged)."""
        ...

    def prepare(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        check: Callable[[], VerifyReport],
        progress: Progress | None,
        durable: bool,
    ) -> tuple[VerifyReport, Prepared]:
        """The archive stage: this format's work, with `check` run beside it (SQLite's check
        and zstd or hashing both leave the GIL); nothing is kept to upload unless it passed."""
        ...

    def publisher(
        self, staged: StagedBackup, draft: Manifest, settings: BackupSettings
    ) -> AbstractContextManager[Publish]:
        """The upload of this staged backup, one destination per call."""
        ...

    def published(self, store: BackupStore, draft: Manifest) -> bool:
        """True when `store` holds this very backup already (an upload re-run)."""
        ...

    def fetch(
        self,
        store: BackupStore,
        manifest: Manifest,
        dest: Path,
        *,
        identities: list[Any],
        progress: Progress | None,
        durable: bool,
    ) -> Path:
        """The backup's database file at `dest`, every checksum checked; nothing left behind
        on a mismatch (`durable=False`: the caller fsyncs it)."""
        ...


def format_named(name: str) -> BackupFormat:
    from .full import FULL
    from .paged import PAGED

    return PAGED if name == "paged" else FULL


def format_of(manifest: Manifest) -> BackupFormat:
    return format_named(manifest.kind)


def staged_format(staged: StagedBackup, settings: BackupSettings) -> BackupFormat:
    return format_named(staged.backup_format(settings.backup_format))


def draft_manifest(
    staged: StagedBackup,
    verify: VerifyReport,
    *,
    db_sha256: str,
    db_size: int,
    archive: ArchiveInfo,
) -> Manifest:
    """A verified snapshot's manifest: the fields every format shares."""
    snap = staged.read_json(SNAPSHOT_INFO, "snapshot")
    return Manifest(
        backup_id=staged.backup_id,
        name=staged.name,
        created_at=str(snap.get("created_at") or rfc3339(backup_id_time(staged.backup_id))),
        db_sha256=db_sha256,
        db_size=db_size,
        page_size=verify.page_size,
        page_count=verify.page_count,
        sqlite_version=verify.sqlite_version,
        archive=archive,
        verify=VerifyInfo(mode=verify.mode, result="ok", seconds=round(verify.seconds, 3)),
        tables=dict(verify.tables),
        tool_version=__version__,
        source_journal_mode=str(snap.get("journal_mode", "unknown")),
        snapshot_seconds=round(float(snap.get("seconds", 0.0)), 3),
    )


def publishes(publish: Publish) -> Iterator[Publish]:
    """A `publisher` that needs no setup: for `contextlib.contextmanager`."""
    yield publish


__all__ = [
    "BackupFormat",
    "FormatName",
    "Prepared",
    "Publish",
    "Published",
    "draft_manifest",
    "format_named",
    "format_of",
    "publishes",
    "staged_format",
]
