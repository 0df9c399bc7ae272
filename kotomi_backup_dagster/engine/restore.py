"""Restore a backup over (or beside) a database, in steps that each leave a checked result.

    choose -> fetch (download, verify sha256 both sides, decrypt, decompress) -> swap in -> check

The restored file is written whole and verified in the target's directory before anything
is moved; the swap keeps the current database (and its -wal) as `<db>.before-restore-<ts>`,
removes the stale -wal/-shm (a stale WAL beside a restored file corrupts it), renames, and
fsyncs the directory. At every instant `<db>` is either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .archive import Progress, extract_archive
from .catalog import find_backup, list_backups
from .errors import BackupError, ConfigError
from .fsutil import fsync_dir
from .manifest import Manifest
from .paged import rebuild_database
from .stores import BackupStore, ObjectNotFound
from .verify import Profile, VerifyReport, verify_database


@dataclass(frozen=True)
class Chosen:
    store: BackupStore
    manifest: Manifest


def parse_time(text: str) -> datetime:
    """RFC 3339 (`2026-11-27T02:00:00Z`, `...+01:00`), or a date (midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--before {text!r} is not an RFC 3339 time (2026-11-27T02:00:00Z)"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def choose_backup(
    stores: Sequence[BackupStore], name: str, which: str = "latest", before: datetime | None = None
) -> Chosen:
    """`latest`, an id, or the newest backup created before `before`, from the first store
    that has it (stores are tried in the order given)."""
    problems: list[str] = []
    for store in stores:
        try:
            if before is not None:
                older = [m for m in list_backups(store, name).backups if m.created < before]
                if older:
                    return Chosen(store, older[0])
                problems.append(
                    f"no backup of {name!r} before {before:%Y-%m-%dT%H:%M:%SZ} at {store.url}"
                )
                continue
            return Chosen(store, find_backup(store, name, which))
        except BackupError as exc:
            problems.append(str(exc))
    raise BackupError("; ".join(problems) or f"no destination to restore {name!r} from")


def fetch_backup(
    chosen: Chosen,
    dest: Path,
    *,
    identities: Sequence[Any] = (),
    progress: Progress | None = None,
) -> Path:
    """Download, decrypt and decompress into `dest`, checking both sha256s against the manifest.

    On any mismatch `dest` is not left behind.
    """
    manifest = chosen.manifest
    if manifest.is_paged:
        return rebuild_database(
            chosen.store, manifest, dest, identities=identities, progress=progress
        )
    try:
        stream = chosen.store.open_read(manifest.archive.key)
    except ObjectNotFound as exc:
        raise BackupError(
            f"backup {manifest.backup_id}: archive {manifest.archive.key} is missing at "
            f"{chosen.store.url}"
        ) from exc
    with contextlib.closing(stream):
        result = extract_archive(
            stream, dest, identities=identities, encrypted=manifest.encrypted, progress=progress
        )
    problems = []
    if result.archive_sha256 != manifest.archive.sha256:
        problems.append("archive sha256 differs from the manifest (tampered or torn)")
    if result.db_sha256 != manifest.db_sha256 or result.db_size != manifest.db_size:
        problems.append("restored database sha256 differs from the manifest")
    if problems:
        dest.unlink(missing_ok=True)
        raise BackupError(f"backup {manifest.backup_id}: {'; '.join(problems)}; nothing restored")
    return dest


def check_restored(db: Path, manifest: Manifest, profile: Profile = "kotomi") -> VerifyReport:
    """Full integrity_check and the manifest's row counts, on a file nothing else has open."""
    report = verify_database(db, mode="full", profile=profile)
    if not report.ok:
        raise BackupError(f"restored database fails its check: {report.summary()}")
    if report.tables != manifest.tables:
        diff = sorted(
            t
            for t in set(report.tables) | set(manifest.tables)
            if report.tables.get(t) != manifest.tables.get(t)
        )
        raise BackupError(f"restored row counts differ from the manifest in: {', '.join(diff)}")
    return report


# SQLite's unix VFS takes POSIX locks: every open WAL connection holds a read lock on the
# -shm "dead man switch" byte and on the database's SHARED range; a rollback-journal
# transaction holds the database's lock bytes. F_GETLK sees them from any process or
# container on the same kernel, and changes nothing (opening the file with SQLite would
# checkpoint a WAL into it).
_LOCK_BYTES = 0x40000000  # PENDING_BYTE: PENDING, RESERVED, then the 510-byte SHARED range
_SHM_DMS = 128
_FLOCK = "hhqqixxxx"  # struct flock on Linux x86_64/aarch64


def database_in_use(db: Path) -> bool:
    """True when another process has the database open (Kotomi running, a reader...).

    Connections of this same process are not seen (POSIX locks never conflict within one
    process); that is fine for its use: the CLI and Dagster never keep the live file open.
    """
    return _locked(db, _LOCK_BYTES, 512) or _locked(Path(f"{db}-shm"), _SHM_DMS, 1)


def _locked(path: Path, start: int, length: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        lock_type: int = struct.unpack(_FLOCK, answer)[0]
        return lock_type != fcntl.F_UNLCK
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SwapResult:
    target: Path
    kept_copy: Path | None
    removed: list[str]


def swap_in(
    restored: Path,
    target: Path,
    *,
    keep_copy: bool = True,
    force: bool = False,
    now: datetime | None = None,
) -> SwapResult:
    """Put a verified restored file in place of `target` (see the module docstring)."""
    if restored.parent.resolve() != target.parent.resolve():
        raise ValueError("restored file must be in the target's directory (same filesystem)")
    if target.exists() and not force and database_in_use(target):
        raise ConfigError(
            f"{target} is in use (another process has it open): stop Kotomi first "
            "(docker compose stop kotomi), or pass --force"
        )
    _take_owner_and_mode(restored, target)  # before anything beside the target moves
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    wal, shm = Path(f"{target}-wal"), Path(f"{target}-shm")
    kept: Path | None = None
    removed: list[str] = []
    moved: list[tuple[Path, Path]] = []  # renames to undo if the swap fails
    try:
        if target.exists() and keep_copy:
            kept = _free_name(target.with_name(f"{target.name}.before-restore-{stamp}"))
            os.link(target, kept)  # the old file stays reachable under both names
            if wal.exists():
                os.replace(wal, Path(f"{kept}-wal"))
                moved.append((Path(f"{kept}-wal"), wal))
        elif wal.exists():
            # Aside, not deleted, until the new file is in place: it holds committed data.
            aside = target.with_name(f".{target.name}-wal.before-restore-{stamp}")
            os.replace(wal, aside)
            moved.append((aside, wal))
        os.replace(restored, target)
    except OSError as exc:
        for moved_to, original in reversed(moved):
            os.replace(moved_to, original)
        if kept is not None:
            kept.unlink(missing_ok=True)
        raise BackupError(
            f"could not put the restored file in place ({exc.strerror or exc}); "
            f"{target} is unchanged"
        ) from exc
    if shm.exists():  # shared memory only, no data: SQLite rebuilds it
        shm.unlink()
        removed.append(shm.name)
    if not keep_copy and moved:
        moved[0][0].unlink()
        removed.append(wal.name)
    fsync_dir(target.parent)
    return SwapResult(target=target, kept_copy=kept, removed=removed)


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or Path(f"{candidate}-wal").exists():
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate


def _take_owner_and_mode(restored: Path, target: Path) -> None:
    """Give the restored file the current file's owner and mode; for a new file, the
    directory's owner (Kotomi's image runs as uid 1000 and must write it) and 0644."""
    if target.exists():
        st = target.stat()
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    else:
        st = target.parent.stat()
        uid, gid, mode = st.st_uid, st.st_gid, 0o644
    try:
        mine = restored.stat()
        if (mine.st_uid, mine.st_gid) != (uid, gid):
            os.chown(restored, uid, gid)
        os.chmod(restored, mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot give the restored file the owner {uid}:{gid} of {target} "
            f"({exc.strerror}); run the restore as root or as that user"
        ) from exc


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    source_url: str
    target: Path
    kept_copy: Path | None
    removed: list[str]
    seconds: float
    report: VerifyReport


def restore_database(
    stores: Sequence[BackupStore],
    name: str,
    target: Path,
    *,
    which: str = "latest",
    before: datetime | None = None,
    identities: Sequence[Any] = (),
    keep_copy: bool = True,
    force: bool = False,
    profile: Profile = "kotomi",
    progress: Progress | None = None,
) -> RestoreResult:
    started = time.monotonic()
    if not target.parent.is_dir():
        raise ConfigError(f"cannot restore to {target}: directory {target.parent} does not exist")
    if target.exists() and not target.is_file():
        raise ConfigError(f"cannot restore to {target}: it is not a file (give the database path)")
    if target.exists() and not force and database_in_use(target):
        # Checked before the download too, so nobody waits for a restore that will refuse.
        raise ConfigError(
            f"{target} is in use (another process has it open): stop Kotomi first "
            "(docker compose stop kotomi), or pass --force"
        )
    chosen = choose_backup(stores, name, which, before)
    tmp = target.with_name(f".{target.name}.restore-{chosen.manifest.backup_id}")
    try:
        fetch_backup(chosen, tmp, identities=identities, progress=progress)
        report = check_restored(tmp, chosen.manifest, profile)
        swap = swap_in(tmp, target, keep_copy=keep_copy, force=force)
    finally:
        tmp.unlink(missing_ok=True)
    return RestoreResult(
        manifest=chosen.manifest,
        source_url=chosen.store.url,
        target=target,
        kept_copy=swap.kept_copy,
        removed=swap.removed,
        seconds=time.monotonic() - started,
        report=report,
    )
