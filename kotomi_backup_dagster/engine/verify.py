"""Verification of a database file: SQLite's own checks, parsed row by row, plus shape.

`quick_check` is O(pages) and catches torn or corrupt pages; `integrity_check` also checks
every index against its table (about 15x slower on Kotomi). A check passes only when SQLite
returns exactly one row, "ok": any other row names a problem, so `grep ok` is not a test.
Foreign-key checks are not a gate: Kotomi's cascades are not reliably enforced.

A full check of a large file is split across cores: one `quick_check` of the whole file (every
b-tree, the freelist, pages used twice or never) plus `integrity_check(<table>)` for each table
(the table and its indexes: index content, UNIQUE, NOT NULL, CHECK), largest first, each worker
on its own read-only connection (SQLite runs without the GIL). Together they check what one
`integrity_check` checks; on a 1 GB Kotomi database with two cores it takes about half the time.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import BackupError
from .kotomi import KOTOMI_TABLES
from .snapshot import check_source, sqlite_uri

VerifyMode = Literal["quick", "full"]
Profile = Literal["kotomi", "generic"]
VERIFY_MODES: tuple[VerifyMode, ...] = ("quick", "full")
PROFILES: tuple[Profile, ...] = ("kotomi", "generic")
MAX_PROBLEMS_KEPT = 20
# Below this size one integrity_check is as fast as the split (the split repeats the page walk).
PARALLEL_CHECK_MIN_BYTES = 32 << 20
MAX_CHECK_WORKERS = 4


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    mode: VerifyMode
    ok: bool
    problems: list[str]
    tables: dict[str, int]
    page_size: int
    page_count: int
    size: int
    sqlite_version: str
    seconds: float
    db_sha256: str | None = None
    missing_tables: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        return "ok" if self.ok else "failed"

    def record(self) -> dict[str, object]:
        """What a backup keeps of its check (staging's verify.json, the manifest's fields)."""
        return {
            "mode": self.mode,
            "result": self.result,
            "problems": self.problems,
            "tables": self.tables,
            "page_size": self.page_size,
            "page_count": self.page_count,
            "sqlite_version": self.sqlite_version,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any], path: Path) -> VerifyReport:
        return cls(
            path=path,
            mode=data["mode"],
            ok=data["result"] == "ok",
            problems=list(data["problems"]),
            tables={str(k): int(v) for k, v in data["tables"].items()},
            page_size=int(data["page_size"]),
            page_count=int(data["page_count"]),
            size=int(data["page_size"]) * int(data["page_count"]),
            sqlite_version=str(data["sqlite_version"]),
            seconds=float(data["seconds"]),
        )

    def summary(self) -> str:
        """One line: what passed or what is wrong."""
        if self.ok:
            rows = sum(self.tables.values())
            return f"{self.mode} check ok: {len(self.tables)} tables, {rows} rows"
        return f"{self.mode} check failed on {self.path.name}: {'; '.join(self.problems[:3])}"


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open a database file read-only.

    A lone file (a snapshot, a restored copy) opens with `immutable=1`: no locks, nothing
    written beside it. A file with a -wal beside it is live, and its committed data may sit
    in the WAL, so it opens as a normal reader instead.
    """
    live = Path(f"{path}-wal").exists()
    return sqlite3.connect(sqlite_uri(path, "mode=ro" if live else "mode=ro&immutable=1"), uri=True)


def verify_database(
    path: Path,
    *,
    mode: VerifyMode = "quick",
    profile: Profile = "kotomi",
    with_sha256: bool = False,
    workers: int | None = None,
) -> VerifyReport:
    """Check a database file that nothing is writing to (a snapshot or a restored copy).

    `workers` bounds the threads of a full check (default: the usable cores, at most 4; 1 runs
    one plain `integrity_check`).
    """
    check_source(path, live=False)
    started = time.monotonic()
    conn = open_readonly(path)
    try:
        count = _check_workers(path, workers) if mode == "full" else 1
        if count > 1:
            checked = _examine(conn, lambda: _parallel_integrity_check(conn, path, count))
        else:
            checked = _examine(conn, lambda: _pragma_check(conn, mode))
    finally:
        conn.close()
    db_sha256 = sha256_file(path) if with_sha256 else None
    return _report(path, mode, profile, checked, path.stat().st_size, started, db_sha256)


def verify_connection(
    conn: sqlite3.Connection, *, label: Path, profile: Profile = "kotomi"
) -> VerifyReport:
    """`quick_check`, tables and row counts of what an open connection sees: for a read
    transaction on the live database whose pages are being read (engine/paged/livepages.py),
    this checks exactly those pages. `label` names the database in messages."""
    started = time.monotonic()
    checked = _examine(conn, lambda: _pragma_check(conn, "quick"))
    size = checked.page_size * checked.page_count
    return _report(label, "quick", profile, checked, size, started, None)


@dataclass
class _Examined:
    problems: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    page_size: int = 0
    page_count: int = 0


def _pragma_check(conn: sqlite3.Connection, mode: VerifyMode) -> list[str]:
    pragma = "integrity_check" if mode == "full" else "quick_check"
    return _check_rows(row[0] for row in conn.execute(f"PRAGMA {pragma}").fetchall())


def _examine(conn: sqlite3.Connection, check: Callable[[], list[str]]) -> _Examined:
    """Run `check`, then read the shape: page size and count, every table's row count."""
    found = _Examined()
    try:
        found.problems.extend(check())
        found.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        found.page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for name in names:
            found.tables[name] = int(
                conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
            )
    except sqlite3.DatabaseError as exc:
        found.problems.append(f"sqlite error: {exc}")
    return found


def _report(
    path: Path,
    mode: VerifyMode,
    profile: Profile,
    checked: _Examined,
    size: int,
    started: float,
    db_sha256: str | None,
) -> VerifyReport:
    problems = checked.problems
    missing = [t for t in KOTOMI_TABLES if t not in checked.tables] if profile == "kotomi" else []
    if missing and not problems:
        problems.append(
            f"missing Kotomi tables: {', '.join(missing)} "
            "(set KOTOMI_BACKUP_PROFILE=generic to back up a non-Kotomi database)"
        )
    return VerifyReport(
        path=path,
        mode=mode,
        ok=not problems,
        problems=problems,
        tables=checked.tables,
        page_size=checked.page_size,
        page_count=checked.page_count,
        size=size,
        sqlite_version=sqlite3.sqlite_version,
        seconds=time.monotonic() - started,
        db_sha256=db_sha256,
        missing_tables=missing,
    )


def _check_rows(rows: Iterable[object]) -> list[str]:
    """The pragma passed iff its only row is exactly 'ok'; otherwise every row is a problem."""
    found = [str(r) for r in rows]
    if found == ["ok"]:
        return []
    if not found:
        return ["check returned no rows"]
    return found[:MAX_PROBLEMS_KEPT]


def _check_workers(path: Path, workers: int | None) -> int:
    if workers is not None:
        return max(1, workers)
    if path.stat().st_size < PARALLEL_CHECK_MIN_BYTES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CHECK_WORKERS))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_jobs(conn: sqlite3.Connection) -> list[str]:
    """The pragmas whose union is one integrity_check, most expensive first.

    Cost estimate per table: rows (max(rowid), O(log n)) times one plus its indexes.
    """
    indexes: dict[str, int] = {}
    tables: list[str] = []
    schema = conn.execute("SELECT type, name, tbl_name, rootpage FROM sqlite_schema")
    for kind, name, table, rootpage in schema:
        if kind == "table" and rootpage:  # rootpage 0: a virtual table, nothing stored
            tables.append(str(name))
        elif kind == "index":
            indexes[str(table)] = indexes.get(str(table), 0) + 1
    weighted: list[tuple[int, str]] = []
    total = 0
    for name in tables:
        try:
            rows = int(conn.execute(f"SELECT max(rowid) FROM {_quote(name)}").fetchone()[0] or 0)
        except sqlite3.OperationalError:  # WITHOUT ROWID: no cheap estimate
            rows = 1 << 16
        total += rows
        weighted.append((rows * (1 + indexes.get(name, 0)), f"integrity_check({_quote(name)})"))
    # quick_check walks every page once: about one pass over every table.
    weighted.append((total, "quick_check"))
    weighted.sort(key=lambda item: -item[0])
    return [pragma for _, pragma in weighted]


def _parallel_integrity_check(conn: sqlite3.Connection, path: Path, workers: int) -> list[str]:
    """One integrity_check's worth of checks over `workers` connections (module docstring)."""
    jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
    for pragma in _check_jobs(conn):
        jobs.put(pragma)
    found: list[list[str]] = []
    lock = threading.Lock()

    def work() -> None:
        problems: list[str] = []
        try:
            worker = open_readonly(path)
            try:
                while True:
                    try:
                        pragma = jobs.get_nowait()
                    except queue.Empty:
                        break
                    rows = worker.execute(f"PRAGMA {pragma}").fetchall()
                    problems.extend(_check_rows(row[0] for row in rows))
            finally:
                worker.close()
        except sqlite3.DatabaseError as exc:
            problems.append(f"sqlite error: {exc}")
        with lock:
            found.append(problems)

    threads = [
        threading.Thread(target=work, name=f"kotomi-check-{n}", daemon=True) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The same damage can show in quick_check and in its table's check: report it once.
    merged = list(dict.fromkeys(p for problems in found for p in problems))
    return merged[:MAX_PROBLEMS_KEPT]


def require_ok(report: VerifyReport) -> None:
    if not report.ok:
        raise BackupError(report.summary())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
