"""Consistent online snapshot of a live SQLite database (WAL or not).

The copy is one `sqlite3_backup_step(-1)`: a single read transaction, so Kotomi's writers
never force a restart (a stepped backup restarts whenever another connection writes between
steps and may never finish). WAL readers do not block writers; the copy only holds back
checkpoints while it runs. CPython's backup loop has no deadline, so the progress callback
enforces one.

Durability is a choice of the caller: a snapshot that another process picks up later (Dagster's
stages) is fsynced; a transient one that the same process archives and deletes at once
(`kotomi-backup backup`) is not, which saves 1-3 s per GB and, as it is deleted before the
kernel writes it back, most of its disk writes (bench/README.md has the figures).

Under a read ceiling (`KOTOMI_BACKUP_READ_MBPS`, engine/priority.py) a WAL database is copied
in steps of about 1 MiB, each waiting for the ceiling, inside one read transaction held on the
source connection: the backup API restarts only when its source starts a new read
transaction and finds the database changed, so the steps copy exactly the snapshot of that
transaction, as the single step does. A rollback-journal database is still copied in one
step: its read lock would hold every writer back for the whole slow copy.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import BackupError, ConfigError, DiskFull
from .fsutil import create_private, fsync_dir, fsync_file, held_fd
from .priority import ReadCeiling

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_DONE = 101
CEILING_STEP = 1 << 20  # bytes copied per step under a read ceiling


@dataclass(frozen=True)
class Snapshot:
    path: Path
    size: int
    page_size: int
    page_count: int
    journal_mode: str
    seconds: float
    busy_retries: int
    # sqlite3_backup_step calls: 1 when the copy finished in one step, more means it was
    # retried (busy) or restarted by a concurrent write (bench/live.py reports it).
    steps: int = 1
    # "copy" (this module) or "live read" (a paged backup read in place: paged/livepages.py).
    method: str = "copy"
    # Staged backups kept for re-execution that were dropped to make room for this one.
    dropped_staging: tuple[str, ...] = ()


def check_source(db_path: Path, *, live: bool = True) -> None:
    """Refuse, with one clear line, what cannot be a database to back up.

    A live database's header is read through a descriptor kept open (`fsutil.held_fd`), so
    that this check never drops the locks of SQLite connections in this process; `live=False`
    (a snapshot or restored copy) opens and closes the file."""
    if not db_path.exists():
        raise ConfigError(f"database not found: {db_path} (set --db or KOTOMI_DB_PATH)")
    if not db_path.is_file():
        raise ConfigError(f"not a file: {db_path} (point --db at the SQLite database file)")
    try:
        if live:
            header = os.pread(held_fd(db_path), len(SQLITE_MAGIC), 0)
        else:
            with db_path.open("rb") as fh:
                header = fh.read(len(SQLITE_MAGIC))
    except PermissionError as exc:
        raise ConfigError(f"cannot read {db_path}: permission denied") from exc
    if not header:
        raise ConfigError(f"database is empty (0 bytes): {db_path}")
    if header != SQLITE_MAGIC:
        raise ConfigError(f"not an SQLite database: {db_path} (wrong file header)")


def take_snapshot(
    db_path: Path,
    dest: Path,
    *,
    deadline_seconds: float = 600.0,
    busy_timeout_ms: int = 5000,
    durable: bool = True,
    ceiling: ReadCeiling | None = None,
) -> Snapshot:
    """Copy `db_path` consistently to `dest` (temp file, fsync, rename).

    The copy is left in rollback-journal mode so it is one self-contained file: it opens
    read-only without a -wal/-shm beside it, and Kotomi switches it back to WAL on start.
    `durable=False` skips every fsync (the rename stays): only for a copy consumed and
    deleted by this same process, which a crash would discard anyway. With `ceiling`, a WAL
    database is read no faster than it allows (module docstring); the deadline is then
    counted beyond the time the ceiling needs.
    """
    check_source(db_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    create_private(tmp)  # SQLite keeps a file's mode (and gives its journal the same)
    started = time.monotonic()
    deadline = started + deadline_seconds
    busy_retries = 0
    steps = 0
    copied = 0  # pages, as the progress callback counts them

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal busy_retries, steps, copied
        steps += 1
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            busy_retries += 1
        elif ceiling is not None and status != SQLITE_DONE:
            ceiling.take((total - remaining - copied) * page_size)  # before the next step
            copied = total - remaining
        # Before the first successful step `remaining` is 0, so test the status, not it.
        if status != SQLITE_DONE and time.monotonic() > deadline:
            raise TimeoutError

    # mode=rw: never create a database where none was (a typo must not back up an empty file).
    busy_timeout = min(busy_timeout_ms / 1000, deadline_seconds)
    try:
        src = sqlite3.connect(sqlite_uri(db_path, "mode=rw"), uri=True, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {db_path}: {exc}") from exc
    try:
        step = -1
        copied = False
        if ceiling is not None and _is_wal(src):
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the read mark
            page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
            step = max(1, CEILING_STEP // page_size)
            deadline += ceiling.seconds_for(db_path.stat().st_size)
        dst = sqlite3.connect(tmp)
        try:
            if not durable:
                dst.execute("PRAGMA synchronous=OFF")
            src.backup(dst, pages=step, progress=progress, sleep=0.05)
            journal_mode = str(src.execute("PRAGMA journal_mode").fetchone()[0])
            # Leave the copy self-contained (see docstring).
            dst.execute("PRAGMA journal_mode=DELETE")
            page_size = int(dst.execute("PRAGMA page_size").fetchone()[0])
            page_count = int(dst.execute("PRAGMA page_count").fetchone()[0])
        finally:
            dst.close()
        copied = True
    except TimeoutError as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(
            f"snapshot of {db_path} did not finish within {deadline_seconds:.0f} s "
            f"(database busy {busy_retries} times); retry later or raise the deadline"
        ) from exc
    except sqlite3.DatabaseError as exc:
        tmp.unlink(missing_ok=True)
        if _no_room(exc, db_path.stat().st_size):
            raise DiskFull(dest.parent, db_path.stat().st_size) from None
        raise BackupError(f"snapshot of {db_path} failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if src.in_transaction:
            src.execute("COMMIT")
        if copied and journal_mode.lower() == "wal":
            checkpoint_after_read(src)
        src.close()
    if durable:
        fsync_file(tmp)
    os.replace(tmp, dest)
    if durable:
        fsync_dir(dest.parent)
    return Snapshot(
        path=dest,
        size=dest.stat().st_size,
        page_size=page_size,
        page_count=page_count,
        journal_mode=journal_mode,
        seconds=time.monotonic() - started,
        busy_retries=busy_retries,
        steps=steps,
    )


def checkpoint_after_read(conn: sqlite3.Connection) -> None:
    """A passive checkpoint, once a backup's read transaction has ended: the WAL frames it
    held back are copied into the database now, by the backup, instead of inside the next
    commit of Kotomi's that reaches the autocheckpoint (the stall after every long read in
    docs/benchmarks.md). Passive: it waits for no one and blocks no writer; one that finds the
    checkpoint busy (Kotomi's own in progress) leaves it to it."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _is_wal(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def _no_room(exc: sqlite3.DatabaseError, size: int) -> bool:
    """SQLite says SQLITE_FULL for a full disk; a file-size limit (ulimit -f) below the size
    shows only as an I/O error on write."""
    code = getattr(exc, "sqlite_errorcode", 0)
    if code == sqlite3.SQLITE_FULL:
        return True
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return code & 0xFF == sqlite3.SQLITE_IOERR and limit != resource.RLIM_INFINITY and limit < size


def sqlite_uri(path: Path, query: str) -> str:
    # '?' and '#' would end the path part of a URI filename.
    quoted = str(path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?{query}"
