"""Salvage what can be read from a corrupt database into a new one.

First the sqlite3 CLI's `.recover`, when it works: Debian's 3.40.1 is built without
`sqlite_dbpage`, so it fails even on a healthy file and prints only a header, and piping
that into sqlite3 makes an empty database. That case is detected, and the fallback copies
table by table, walking each table by rowid and skipping the ranges that cannot be read.
An empty salvage is never reported as a success.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BackupError, ConfigError
from .fsutil import PRIVATE_FILE, fsync_dir, open_private, scratch_folder
from .verify import open_readonly

BATCH = 256
MAX_SKIPS_PER_TABLE = 200


@dataclass
class TableSalvage:
    name: str
    saved: int = 0
    errors: int = 0
    first_error: str | None = None


@dataclass
class RecoverReport:
    broken: Path
    out: Path
    method: str  # "recover" (sqlite3 .recover) or "table-by-table"
    tables: dict[str, TableSalvage] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def saved(self) -> int:
        return sum(t.saved for t in self.tables.values())


def recover_database(broken: Path, out: Path, *, sqlite3_cli: str | None = None) -> RecoverReport:
    if not broken.is_file():
        raise ConfigError(f"not found: {broken}")
    if out.exists():
        raise ConfigError(f"{out} exists: choose a new file for the salvage (nothing overwritten)")
    if not out.parent.is_dir():
        raise ConfigError(f"directory {out.parent} does not exist")
    cli = sqlite3_cli if sqlite3_cli is not None else shutil.which("sqlite3")
    with scratch_folder(out.parent, ".kotomi-recover-") as tmp:
        staged = tmp / out.name
        report = _with_recover_command(cli, broken, staged) if cli else None
        if report is None:
            staged.unlink(missing_ok=True)
            report = _table_by_table(broken, staged)
            if cli:
                report.notes.insert(
                    0, "sqlite3 .recover produced nothing usable; salvaged table by table"
                )
        if report.saved == 0:
            raise BackupError(
                f"nothing could be salvaged from {broken} (no readable rows); "
                "restore the newest backup instead: kotomi-backup restore latest --db ..."
            )
        os.chmod(staged, PRIVATE_FILE)  # the salvage holds the users' data and secrets
        os.replace(staged, out)
        fsync_dir(out.parent)
    report.out = out
    return report


def _with_recover_command(cli: str, broken: Path, staged: Path) -> RecoverReport | None:
    """`sqlite3 broken .recover | sqlite3 staged`, or None when that salvaged nothing."""
    sql = staged.with_suffix(".sql")
    try:
        with open_private(sql) as fh:
            subprocess.run(
                [cli, "-readonly", str(broken), ".recover"],
                stdout=fh,
                stderr=subprocess.DEVNULL,
                timeout=3600,
                check=False,
            )
        with sql.open("rb") as fh:
            done = subprocess.run(
                [cli, str(staged)], stdin=fh, capture_output=True, timeout=3600, check=False
            )
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        sql.unlink(missing_ok=True)
    if done.returncode != 0 or not staged.exists():
        return None
    report = RecoverReport(broken=broken, out=staged, method="recover")
    try:
        conn = sqlite3.connect(staged)
        try:
            for table in _user_tables(conn):
                count = conn.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0]
                report.tables[table] = TableSalvage(name=table, saved=int(count))
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    return report if report.saved > 0 else None


def _table_by_table(broken: Path, staged: Path) -> RecoverReport:
    report = RecoverReport(broken=broken, out=staged, method="table-by-table")
    src = open_readonly(broken)
    src.text_factory = _text_or_bytes
    dst = sqlite3.connect(staged, isolation_level=None)
    try:
        try:
            schema = src.execute(
                "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise BackupError(
                f"the schema of {broken} is unreadable ({exc}): nothing can be salvaged; "
                "restore the newest backup instead"
            ) from exc
        tables = [(n, s) for t, n, s in schema if t == "table"]
        for name, sql in tables:
            dst.execute(sql)
            report.tables[name] = _copy_table(src, dst, name)
        for kind, name, sql in schema:
            if kind in ("index", "view", "trigger"):
                try:
                    dst.execute(sql)
                except sqlite3.DatabaseError as exc:
                    report.notes.append(f"{kind} {name} not recreated: {exc}")
    finally:
        src.close()
        dst.close()
    return report


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> TableSalvage:
    """Walk the table by rowid: in batches while pages read, row by row near a bad page,
    then jump past the unreadable range (further each time it is still unreadable)."""
    salvage = TableSalvage(name=table)
    info = src.execute(f"PRAGMA table_info({_q(table)})").fetchall()
    columns = [str(row[1]) for row in info]
    pks = [row for row in info if row[5]]
    aliased = len(pks) == 1 and str(pks[0][2]).upper() == "INTEGER"  # column is the rowid
    column_list = ", ".join(_q(c) for c in columns)
    targets = column_list if aliased else f"rowid, {column_list}"
    width = len(columns) if aliased else len(columns) + 1
    insert = f"INSERT OR IGNORE INTO {_q(table)} ({targets}) VALUES ({', '.join('?' * width)})"
    select = f"SELECT rowid, {column_list} FROM {_q(table)} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    last: int | None = None
    step, skips, careful = 1, 0, 0
    dst.execute("BEGIN")
    while skips <= MAX_SKIPS_PER_TABLE:
        limit = 1 if careful else BATCH
        try:
            rows = src.execute(select, (-(2**63) if last is None else last, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            salvage.errors += 1
            salvage.first_error = salvage.first_error or str(exc)
            if not careful:
                careful = 64  # go row by row up to the bad page before skipping anything
                continue
            skips += 1
            last = (0 if last is None else last) + step
            step *= 4
            continue
        if not rows:
            break
        careful = max(careful - len(rows), 0)
        step = 1
        dst.executemany(insert, [r[1:] for r in rows] if aliased else rows)
        salvage.saved += len(rows)
        last = int(rows[-1][0])
    dst.execute("COMMIT")
    return salvage


def _text_or_bytes(raw: bytes) -> str | bytes:
    """Damaged text stays as its bytes (a BLOB) instead of losing the whole row."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
