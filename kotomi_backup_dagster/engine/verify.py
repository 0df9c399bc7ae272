"""Verification of a database file: SQLite's own checks, parsed row by row, plus shape.

`quick_check` is O(pages) and catches torn or corrupt pages; `integrity_check` also checks
every index against its table (about 15x slower on Kotomi). A check passes only when SQLite
returns exactly one row, "ok": any other row names a problem, so `grep ok` is not a test.
Foreign-key checks are not a gate: Kotomi's cascades are not reliably enforced.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import BackupError
from .kotomi import KOTOMI_TABLES
from .snapshot import check_source, sqlite_uri

VerifyMode = Literal["quick", "full"]
Profile = Literal["kotomi", "generic"]
VERIFY_MODES: tuple[VerifyMode, ...] = ("quick", "full")
PROFILES: tuple[Profile, ...] = ("kotomi", "generic")
MAX_PROBLEMS_KEPT = 20


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
) -> VerifyReport:
    """Check a database file that nothing is writing to (a snapshot or a restored copy)."""
    check_source(path)
    started = time.monotonic()
    problems: list[str] = []
    tables: dict[str, int] = {}
    page_size = page_count = 0
    sqlite_version = sqlite3.sqlite_version
    conn = open_readonly(path)
    try:
        try:
            pragma = "integrity_check" if mode == "full" else "quick_check"
            rows = conn.execute(f"PRAGMA {pragma}").fetchall()
            problems.extend(_check_rows(row[0] for row in rows))
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            for name in names:
                quoted = '"' + name.replace('"', '""') + '"'
                tables[name] = int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            problems.append(f"sqlite error: {exc}")
    finally:
        conn.close()
    missing = [t for t in KOTOMI_TABLES if t not in tables] if profile == "kotomi" else []
    if missing and not problems:
        problems.append(
            f"missing Kotomi tables: {', '.join(missing)} "
            "(set KOTOMI_BACKUP_PROFILE=generic to back up a non-Kotomi database)"
        )
    db_sha256 = sha256_file(path) if with_sha256 else None
    return VerifyReport(
        path=path,
        mode=mode,
        ok=not problems,
        problems=problems,
        tables=tables,
        page_size=page_size,
        page_count=page_count,
        size=path.stat().st_size,
        sqlite_version=sqlite_version,
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


def require_ok(report: VerifyReport) -> None:
    if not report.ok:
        raise BackupError(report.summary())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
