"""Restore a backup over (or beside) a database, in steps that each leave a checked result.

    choose -> fetch (download, verify sha256 both sides, decrypt, decompress) -> check -> swap in

The restored file is written whole and verified in the target's directory before anything
is moved. The check is SQLite's `integrity_check`, or a `quick_check` when these very bytes
(same sha256) already passed an `integrity_check` at backup time or in a recorded drill
(`choose_check`); the row counts are compared in both cases, and the file is fsynced while the
check runs. The swap keeps the current database (and its -wal) as
`<db>.before-restore-<ts>`, removes the stale -wal/-shm (a stale WAL beside a restored file
corrupts it), renames, and fsyncs the directory. At every instant `<db>` is either the old file
or the new one.

The target is checked first and again just before the rename (restore_target.py): a restore
replaces only a SQLite database file, or creates a new file; a symlink, a folder, a device, a
FIFO, a hard-linked file or a file that is not a database is refused, force or not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .archive import Progress
from .errors import BackupError, ConfigError, DiskFull
from .formats import format_of
from .fsutil import PRIVATE_FILE, fsync_dir, fsync_file, try_lock_dir, unlock_dir
from .layout import list_backups, list_drills, read_hidden_manifest
from .manifest import Manifest, backup_id_time
from .restore_target import RestoreTarget, check_target, create_new, recheck
from .stores import BackupStore, safe_url
from .verify import Profile, VerifyMode, VerifyReport, verify_database

NEWEST_NAMED = 3  # backup ids a wrong id's error names, newest first


@dataclass(frozen=True)
class Chosen:
    store: BackupStore
    manifest: Manifest
    # Newer entries passed over because their manifest is unreadable: "<id> (<why>)".
    skipped: tuple[str, ...] = ()


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
    that has it (stores are tried in the order given). Newer entries whose manifest is
    unreadable are passed over and named in `Chosen.skipped`."""
    problems: list[str] = []
    misconfigured = unknown_id = False
    for store in stores:
        try:
            # With the versions: a rewritten manifest is read as first written.
            listing = list_backups(store, name, store.inventory(name))
        except BackupError as exc:
            misconfigured = misconfigured or isinstance(exc, ConfigError)
            problems.append(str(exc))
            continue
        if before is not None:
            candidates = [m for m in listing.backups if m.created < before]
            if not candidates:
                problems.append(
                    f"no backup of {name!r} before {before:%Y-%m-%dT%H:%M:%SZ} at {store.url}"
                )
                continue
        elif which == "latest":
            candidates = listing.backups
        else:
            candidates = [m for m in listing.backups if m.backup_id == which]
            if not candidates and which in listing.incomplete:
                # Hidden behind a delete marker (keeper/guard.py)? Its versions are there.
                hidden = read_hidden_manifest(store, name, which)
                candidates = [hidden] if hidden is not None else []
            if not candidates:
                why = listing.problems.get(which)
                if why:
                    problems.append(
                        f"backup {which!r} of {name!r} at {store.url} has an unreadable manifest "
                        f"({why})"
                    )
                    continue
                newest = [m.backup_id for m in listing.backups[:NEWEST_NAMED]]
                there = f"the newest there: {', '.join(newest)}" if newest else "it has none"
                problems.append(f"backup {which!r} of {name!r} not found at {store.url} ({there})")
                unknown_id = True
                continue
        if not candidates:
            problems.append(f"no backups of {name!r} at {store.url}")
            continue
        chosen = candidates[0]
        newer = listing.unreadable_newer_than(chosen.backup_id)
        if before is not None:
            newer = [i for i in newer if backup_id_time(i) < before]
        skipped = tuple(f"{safe_url(store.url)}: {i} ({listing.problems[i]})" for i in newer)
        return Chosen(store, chosen, skipped if which in ("latest",) or before else ())
    # A destination set up wrongly (credentials, bucket) may hide the backup: exit 2.
    kind = ConfigError if misconfigured else BackupError
    listed = "; `kotomi-backup list` shows every backup" if unknown_id else ""
    raise kind(
        "; ".join(problems) + listed if problems else f"no destination to restore {name!r} from"
    )


def fetch_backup(
    chosen: Chosen,
    dest: Path,
    *,
    identities: Sequence[Any] = (),
    progress: Progress | None = None,
    durable: bool = True,
) -> Path:
    """Download, decrypt and decompress into `dest`, checking both sha256s against the manifest.

    On any mismatch `dest` is not left behind. `durable=False`: the caller fsyncs `dest`.
    """
    return format_of(chosen.manifest).fetch(
        chosen.store,
        chosen.manifest,
        dest,
        identities=list(identities),
        progress=progress,
        durable=durable,
    )


@dataclass(frozen=True)
class CheckChoice:
    """Which check a restore runs on the restored bytes, and why (shown to the operator)."""

    mode: VerifyMode
    why: str


def choose_check(
    store: BackupStore, manifest: Manifest, *, force_full: bool = False
) -> CheckChoice:
    """The restored file's sha256 is checked against the manifest's in every case. When those
    same bytes already passed a full integrity_check (at backup with verify=full, or in a
    passing drill recorded beside the backup), a quick_check and the row counts are enough;
    otherwise the full check runs."""
    if force_full:
        return CheckChoice("full", "a full check was asked for")
    if manifest.verify.mode == "full" and manifest.verify.result == "ok":
        return CheckChoice(
            "quick", f"these bytes passed integrity_check when backed up ({manifest.created_at})"
        )
    for drill in list_drills(store, manifest.name, manifest.backup_id):
        if drill.ok and drill.checks.get("integrity") is True:
            return CheckChoice(
                "quick", f"these bytes passed integrity_check in the drill of {drill.drilled_at}"
            )
    return CheckChoice("full", "no earlier integrity_check of these bytes")


def check_restored(
    db: Path, manifest: Manifest, profile: Profile = "kotomi", mode: VerifyMode = "full"
) -> VerifyReport:
    """SQLite's check (`mode`) and the manifest's row counts, on a file nothing else has open."""
    report = verify_database(db, mode=mode, profile=profile)
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

    Two signs, either is enough: SQLite's locks (seen from any process or container on the
    same kernel: a WAL connection always holds one, a rollback-journal connection only inside
    a transaction), and, for an idle rollback-journal connection, a process of this machine
    that holds the file open for writing (/proc; what this user may see of it).
    Connections of this same process are not seen; the CLI and Dagster never keep the live
    file open for writing.
    """
    return (
        _locked(db, _LOCK_BYTES, 512)
        or _locked(Path(f"{db}-shm"), _SHM_DMS, 1)
        or _open_for_writing_elsewhere(db)
    )


def _open_for_writing_elsewhere(db: Path) -> bool:
    try:
        st = os.stat(db)
    except OSError:
        return False
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to see
        for fd in fds:
            try:
                target = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if (target.st_dev, target.st_ino) == (st.st_dev, st.st_ino) and _writable(pid, fd):
                return True
    return False


def _writable(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return False


def _locked(path: Path, start: int, length: int) -> bool:
    try:  # O_NONBLOCK: a FIFO planted at <db>-shm does not hang the check
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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
    checked: RestoreTarget | None = None,
) -> SwapResult:
    """Put a verified restored file in place of `target` (see the module docstring).

    `checked`: `target` as checked before the download; it must still be what it was then.
    """
    if checked is None:
        checked = check_target(target)
    else:
        recheck(checked)
    target = checked.path
    if restored.parent.resolve() != target.parent:
        raise ValueError("restored file must be in the target's directory (same filesystem)")
    if checked.replaces and not force and database_in_use(target):
        raise ConfigError(
            f"{target} is in use (another process has it open): stop Kotomi first "
            "(docker compose stop kotomi), or pass --force"
        )
    _take_owner_and_mode(restored, checked)  # before anything beside the target moves
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    wal, shm = Path(f"{target}-wal"), Path(f"{target}-shm")
    kept: Path | None = None
    removed: list[str] = []
    moved: list[tuple[Path, Path]] = []  # renames to undo if the swap fails
    try:
        if checked.replaces and keep_copy:
            kept = _free_name(target.with_name(f"{target.name}.before-restore-{stamp}"))
            # The old file stays reachable under both names (the name itself, never a link's).
            os.link(target, kept, follow_symlinks=False)
            if os.path.lexists(wal):
                os.replace(wal, Path(f"{kept}-wal"))
                moved.append((Path(f"{kept}-wal"), wal))
        elif os.path.lexists(wal):
            # Aside, not deleted, until the new file is in place: it holds committed data.
            aside = target.with_name(f".{target.name}-wal.before-restore-{stamp}")
            os.replace(wal, aside)
            moved.append((aside, wal))
        recheck(checked)  # the last look before the name changes hands
        if checked.replaces:
            os.replace(restored, target)
        else:
            create_new(restored, checked)
    except (OSError, ConfigError) as exc:
        for moved_to, original in reversed(moved):
            os.replace(moved_to, original)
        if kept is not None:
            kept.unlink(missing_ok=True)
        if isinstance(exc, ConfigError):
            raise
        raise BackupError(
            f"could not put the restored file in place ({exc.strerror or exc}); "
            f"{target} is unchanged"
        ) from exc
    if os.path.lexists(shm):  # shared memory only, no data: SQLite rebuilds it
        shm.unlink()
        removed.append(shm.name)
    if not keep_copy and moved:
        moved[0][0].unlink()
        removed.append(wal.name)
    fsync_dir(target.parent)
    return SwapResult(target=target, kept_copy=kept, removed=removed)


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while os.path.lexists(candidate) or os.path.lexists(f"{candidate}-wal"):
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate


def _take_owner_and_mode(restored: Path, target: RestoreTarget) -> None:
    """Give the restored file the current file's owner and mode; for a new file, the
    directory's owner (Kotomi's image runs as uid 1000 and must write it) and 0600 (it holds
    the users' data and Kotomi's secrets). Both as checked, never through a symlink."""
    if target.file_stat is not None:
        st = target.file_stat
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    else:
        st = target.folder_stat
        uid, gid, mode = st.st_uid, st.st_gid, PRIVATE_FILE
    try:
        mine = restored.stat()
        if (mine.st_uid, mine.st_gid) != (uid, gid):
            os.chown(restored, uid, gid)
        os.chmod(restored, mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot give the restored file the owner {uid}:{gid} of {target.path} "
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
    skipped: tuple[str, ...] = ()  # newer entries passed over: their manifest is unreadable
    check: CheckChoice = CheckChoice("full", "")


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
    force_full_check: bool = False,
) -> RestoreResult:
    started = time.monotonic()
    checked = check_target(target)  # before anything is downloaded or written
    target = checked.path
    with restoring_into(target):
        if checked.replaces and not force and database_in_use(target):
            # Checked before the download too, so nobody waits for a restore that will refuse.
            raise ConfigError(
                f"{target} is in use (another process has it open): stop Kotomi first "
                "(docker compose stop kotomi), or pass --force"
            )
        chosen = choose_backup(stores, name, which, before)
        check = choose_check(chosen.store, chosen.manifest, force_full=force_full_check)
        tmp = staged_restore_path(target, chosen.manifest.backup_id)
        try:
            try:
                fetch_backup(chosen, tmp, identities=identities, progress=progress, durable=False)
                report = check_and_sync(tmp, chosen.manifest, profile, check.mode)
            except DiskFull:
                raise  # about this machine's disk, not the backup
            except BackupError as exc:
                raise _about_backup(chosen, exc, target) from exc
            swap = swap_in(tmp, target, keep_copy=keep_copy, force=force, checked=checked)
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
        skipped=chosen.skipped,
        check=check,
    )


def check_and_sync(
    restored: Path, manifest: Manifest, profile: Profile, mode: VerifyMode
) -> VerifyReport:
    """`check_restored` while the restored file goes to disk: SQLite reads it from the page
    cache as the kernel writes it back, so the check and the fsync share the wait."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-fsync") as pool:
        synced = pool.submit(fsync_file, restored)
        try:
            report = check_restored(restored, manifest, profile, mode)
        finally:
            wait([synced])
        synced.result()
    fsync_dir(restored.parent)
    return report


def _about_backup(chosen: Chosen, exc: BackupError, target: Path) -> BackupError:
    """Every failure of a chosen backup says which backup, where, and that nothing changed:
    `backup <id> at <url>: <what>; nothing restored, <target> is unchanged`."""
    backup_id = chosen.manifest.backup_id
    url = safe_url(chosen.store.url)
    text = str(exc).removeprefix(f"backup {backup_id}: ").removesuffix("; nothing restored")
    text = text.replace(f" at {url}", "")  # said once, up front
    kind = ConfigError if isinstance(exc, ConfigError) else BackupError
    return kind(f"backup {backup_id} at {url}: {text}; nothing restored, {target} is unchanged")


def staged_restore_path(target: Path, backup_id: str) -> Path:
    """Where a restore writes and checks the backup, beside the target (same filesystem)."""
    return target.with_name(f"{RESTORE_PREFIX.format(target.name)}{backup_id}")


RESTORE_PREFIX = ".{}.restore-"


@contextlib.contextmanager
def restoring_into(target: Path, *, sweep: bool = True) -> Iterator[None]:
    """Hold the restore lock of `target`'s folder (one restore there at a time: another is
    refused at once with one line) and, with `sweep`, first remove what killed restores left
    beside `target`: the staged file and the temp files of its writers
    (`.<db>.restore-<id>`, `..<db>.restore-<id>.<random>.partial`). A later step of the same
    restore (Dagster's restore_job) takes the lock without sweeping its own staged file."""
    folder = target.parent
    if not try_lock_dir(folder):
        raise ConfigError(
            f"another restore into {folder} is running; wait for it to end and try again"
        )
    try:
        if sweep:
            sweep_restore_leftovers(target)
        yield
    finally:
        unlock_dir(folder)


def sweep_restore_leftovers(target: Path) -> list[str]:
    """Remove what killed restores of `target` left beside it (call holding the lock)."""
    prefix = RESTORE_PREFIX.format(target.name)
    removed = []
    for entry in os.scandir(target.parent):
        name = entry.name
        if (name.startswith(prefix) or name.startswith(f".{prefix}")) and entry.is_file(
            follow_symlinks=False
        ):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(name)
    return removed
