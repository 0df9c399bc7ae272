"""The staging area: where a backup in the making keeps its files between stages.

    <staging>/<name>/                 0700; its flock guards creating and sweeping
    <staging>/<name>/<backup_id>/     one backup in the making (0700, files 0600); its
                                      flock is held by the process working in it
        .keep                         a Dagster run's work, kept for "re-execute from failure"
        snapshot.json, verify.json, manifest.json, pages.json, <name>.db, ...

A folder nobody holds is either kept for re-execution (`.keep`, written once its snapshot is
complete) or what a killed run left: the next backup removes the latter at once, and the
former when it is a week old, when a new backup needs its room (oldest first, by name), or
when more than the newest few are kept (`keep_newest`: an hourly schedule through a day-long
outage would otherwise stack a copy of the database per hour).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .archive import archive_suffix
from .config import FORMAT_NAMES
from .errors import BackupError, ConfigError, DiskFull, is_no_space
from .fsutil import (
    dir_mutex,
    holds_lock,
    private_dir,
    remove_if_abandoned,
    try_lock_dir,
    unlock_dir,
    write_private,
)
from .manifest import backup_id_time, is_backup_id
from .paged import PageHashes
from .verify import VerifyReport

SNAPSHOT_INFO = "snapshot.json"
VERIFY_INFO = "verify.json"
DRAFT_MANIFEST = "manifest.json"
PAGE_HASHES = "pages.hashes"  # paged format: the snapshot's page hashes
PAGE_HASHES_INFO = "pages.json"
KEEP_MARK = ".keep"
STALE_STAGING_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class StagedBackup:
    """A backup in the making: its id and the staging directory that holds its files."""

    name: str
    backup_id: str
    workdir: Path

    @property
    def snapshot_path(self) -> Path:
        return self.workdir / f"{self.name}.db"

    def archive_path(self, encrypted: bool) -> Path:
        return self.workdir / f"{self.name}{archive_suffix(encrypted)}"

    @classmethod
    def open(cls, staging_dir: Path, name: str, backup_id: str) -> StagedBackup:
        workdir = staging_dir / name / backup_id
        if not workdir.is_dir():
            raise BackupError(
                f"staged backup {backup_id} is gone from {workdir}; run the whole backup again"
            )
        return cls(name=name, backup_id=backup_id, workdir=workdir)

    @contextmanager
    def working(self) -> Iterator[StagedBackup]:
        """Hold the folder's lock while a stage works in it (a no-op when this process holds
        it already): no sweep removes it meanwhile, and no other run works in it too. A
        write that finds the disk full is one `DiskFull` line."""
        try:
            with self._locked():
                yield self
        except OSError as exc:
            if is_no_space(exc):
                raise DiskFull(self.workdir, self.database_size()) from None
            raise

    def backup_format(self, default: str) -> str:
        """The format its snapshot stage chose (`default` for a folder staged before the
        choice was recorded)."""
        try:
            chosen = json.loads((self.workdir / SNAPSHOT_INFO).read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            return default
        return chosen if chosen in FORMAT_NAMES else default

    def database_size(self) -> int | None:
        """The snapshot's size, once the snapshot stage recorded it."""
        try:
            return int(json.loads((self.workdir / SNAPSHOT_INFO).read_text())["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if holds_lock(self.workdir):
            yield
            return
        if not self.workdir.is_dir():
            raise BackupError(
                f"staged backup {self.backup_id} is gone from {self.workdir}; "
                "run the whole backup again"
            )
        if not try_lock_dir(self.workdir):
            raise BackupError(
                f"staged backup {self.backup_id} is being worked on by another run; "
                "wait for it to end"
            )
        try:
            if not self.workdir.is_dir():  # swept just before the lock was taken
                raise BackupError(
                    f"staged backup {self.backup_id} is gone from {self.workdir}; "
                    "run the whole backup again"
                )
            yield
        finally:
            unlock_dir(self.workdir)

    def release(self) -> None:
        unlock_dir(self.workdir)

    def keep_for_reexecution(self) -> None:
        """Mark a completed snapshot as worth keeping while nobody works on it."""
        write_private(self.workdir / KEEP_MARK, b"")

    def remove(self) -> None:
        """Delete the folder (every stage is done, or the run gave up), then let it go."""
        try:
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            unlock_dir(self.workdir)

    def read_json(self, filename: str, stage: str) -> dict[str, Any]:
        path = self.workdir / filename
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BackupError(
                f"backup {self.backup_id}: the {stage} stage has not run (no {filename}); "
                "run the whole backup again"
            ) from exc
        except ValueError as exc:  # torn by a crash: staging files are not fsynced
            raise BackupError(
                f"backup {self.backup_id}: staged {filename} is damaged; run the whole backup again"
            ) from exc
        return data

    def verify_report(self) -> VerifyReport:
        """The verify stage's record (verify.json)."""
        record = self.read_json(VERIFY_INFO, "verify")
        try:
            return VerifyReport.from_record(record, self.workdir)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(
                f"backup {self.backup_id}: staged {VERIFY_INFO} is damaged; "
                "run the whole backup again"
            ) from exc

    def page_hashes(self) -> PageHashes:
        try:
            return PageHashes(**self.read_json(PAGE_HASHES_INFO, "archive"))
        except TypeError as exc:
            raise BackupError(
                f"backup {self.backup_id}: staged {PAGE_HASHES_INFO} is damaged; "
                "run the whole backup again"
            ) from exc

    def write_json(self, filename: str, data: dict[str, Any]) -> None:
        self.write_bytes(filename, (json.dumps(data, indent=2, default=str) + "\n").encode())

    def write_bytes(self, filename: str, data: bytes) -> None:
        write_private(self.workdir / filename, data)


@dataclass(frozen=True)
class StagingArea:
    """The staging folder of one database."""

    root: Path  # KOTOMI_BACKUP_STAGING_DIR
    name: str

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def prepare(self) -> Path:
        """The folder, 0700 (the root only when made here: it may be a shared disk)."""
        try:
            private_dir(self.root, tighten=False)
            return private_dir(self.folder)
        except DiskFull:
            raise
        except ConfigError as exc:
            raise ConfigError(
                f"KOTOMI_BACKUP_STAGING_DIR {self.root} is not usable: {exc}"
            ) from None

    def create(
        self, backup_id: str, needed: int, *, now: datetime | None = None
    ) -> tuple[StagedBackup, list[str]]:
        """A new, locked folder for `backup_id`, after removing what killed runs left and,
        if the disk lacks `needed` bytes, the oldest work kept for re-execution. Returns it
        and the ids of the kept backups dropped for room."""
        folder = self.prepare()
        with dir_mutex(folder):
            self.sweep(now=now)
            dropped = self._make_room(needed)
            workdir = folder / backup_id
            try:
                os.mkdir(workdir, 0o700)
            except PermissionError:
                raise ConfigError(
                    f"KOTOMI_BACKUP_STAGING_DIR {self.root} is not usable: cannot create "
                    f"{workdir}: permission denied"
                ) from None
            except OSError as exc:
                if is_no_space(exc):
                    raise DiskFull(self.folder, needed) from None
                raise BackupError(f"cannot create {workdir}: {exc.strerror or exc}") from None
            try_lock_dir(workdir)
        return StagedBackup(name=self.name, backup_id=backup_id, workdir=workdir), dropped

    def sweep(self, *, now: datetime | None = None) -> list[str]:
        """Remove the folders of killed runs and kept work older than a week; their ids."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=STALE_STAGING_SECONDS)
        removed = []
        for child in self._children():
            kept = (child / KEEP_MARK).exists()
            if (not kept or backup_id_time(child.name) < cutoff) and remove_if_abandoned(child):
                removed.append(child.name)
        return removed

    def keep_newest(self, count: int) -> list[str]:
        """Drop the kept backups older than the newest `count` (those nobody holds: a run
        working in one keeps it); their ids, oldest first."""
        folder = self.prepare()
        dropped: list[str] = []
        with dir_mutex(folder):
            kept = self.kept()
            for backup_id in kept[: max(0, len(kept) - count)]:
                if remove_if_abandoned(folder / backup_id):
                    dropped.append(backup_id)
        return dropped

    def kept(self) -> list[str]:
        """Ids of backups kept for re-execution, oldest first (held ones included)."""
        return [c.name for c in self._children() if (c / KEEP_MARK).exists()]

    def _children(self) -> list[Path]:
        try:
            entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        return [
            Path(e.path)
            for e in entries
            if is_backup_id(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def _make_room(self, needed: int) -> list[str]:
        dropped: list[str] = []
        for backup_id in self.kept():
            if shutil.disk_usage(self.folder).free >= needed:
                break
            if remove_if_abandoned(self.folder / backup_id):
                dropped.append(backup_id)
        free = shutil.disk_usage(self.folder).free
        if free < needed:
            raise DiskFull(self.folder, needed, free)
        return dropped


__all__ = [
    "DRAFT_MANIFEST",
    "KEEP_MARK",
    "PAGE_HASHES",
    "PAGE_HASHES_INFO",
    "SNAPSHOT_INFO",
    "STALE_STAGING_SECONDS",
    "VERIFY_INFO",
    "StagedBackup",
    "StagingArea",
]
