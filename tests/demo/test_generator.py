"""Tests of the deterministic demo database generator."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo import DemoStats, connect_like_kotomi, generate_demo_database
from kotomi_backup_dagster.engine.kotomi import KOTOMI_TABLES

GO_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})?[+-]\d\d:\d\d$")
DEFAULT_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoStats:
    return generate_demo_database(
        tmp_path_factory.mktemp("demo") / "kotomi.db", size_bytes=400_000, seed=7
    )


def _digest(path: Path) -> str:
    conn = sqlite3.connect(path)
    h = hashlib.sha256()
    for line in conn.iterdump():
        h.update(line.encode())
        h.update(b"\n")
    conn.close()
    return h.hexdigest()


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def test_demo_is_wal_checkpointed_and_sound(demo: DemoStats) -> None:
    header = demo.path.read_bytes()[:100]
    assert header[18] == 2 and header[19] == 2  # WAL read/write versions in the header
    wal = Path(f"{demo.path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(demo.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    # Nothing left behind next to it (no temporary file).
    assert [p.name for p in demo.path.parent.iterdir() if p.name != "kotomi.db-wal"] == [
        "kotomi.db"
    ]


def test_demo_schema_is_kotomis(demo: DemoStats, tmp_path: Path) -> None:
    fresh = connect_like_kotomi(tmp_path / "fresh.db")
    want = fresh.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
    conn = sqlite3.connect(demo.path)
    got = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
    assert got.fetchall() == want.fetchall()
    fresh.close()
    conn.close()


def test_demo_has_realistic_rows_in_every_table(demo: DemoStats) -> None:
    conn = sqlite3.connect(demo.path)
    for table in KOTOMI_TABLES:
        n = _count(conn, f"SELECT count(*) FROM {table}")
        assert n > 0, table
        assert demo.rows[table] == n, table
    statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM comments")}
    assert statuses == {"pending", "approved", "rejected"}
    # Threaded: replies point at an earlier comment of the same page.
    assert (
        _count(
            conn,
            "SELECT count(*) FROM comments c JOIN comments p"
            " ON p.id = c.parent_id AND p.page_id = c.page_id",
        )
        == _count(conn, "SELECT count(*) FROM comments WHERE parent_id IS NOT NULL")
        > 0
    )
    assert _count(conn, "SELECT count(*) FROM reactions WHERE page_id IS NOT NULL") > 0
    assert _count(conn, "SELECT count(*) FROM reactions WHERE comment_id IS NOT NULL") > 0
    created = [r[0] for r in conn.execute("SELECT created_at FROM comments")]
    assert any(GO_TS.match(t) for t in created)
    assert any(DEFAULT_TS.match(t) for t in created)
    assert all(GO_TS.match(t) or DEFAULT_TS.match(t) for t in created)
    assert _count(conn, "SELECT count(*) FROM sites") >= 2
    modes = {r[0] for r in conn.execute("SELECT auth_mode FROM site_auth_configs")}
    assert modes == {"kotomi", "external"}
    ids = [r[0] for r in conn.execute("SELECT id FROM comments LIMIT 50")]
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i)
        for i in ids
    )
    conn.close()


@pytest.mark.parametrize("size", [50_000, 400_000, 3_000_000])
def test_demo_size_is_near_target(tmp_path: Path, size: int) -> None:
    stats = generate_demo_database(tmp_path / "d.db", size_bytes=size, seed=1)
    assert stats.size_bytes == stats.path.stat().st_size
    assert abs(stats.size_bytes - size) <= size * 0.1
    conn = sqlite3.connect(stats.path)
    for table in KOTOMI_TABLES:
        assert _count(conn, f"SELECT count(*) FROM {table}") > 0, table
    assert {r[0] for r in conn.execute("SELECT DISTINCT status FROM comments")} == {
        "pending",
        "approved",
        "rejected",
    }
    conn.close()


def test_same_seed_same_content_other_seed_differs(tmp_path: Path, demo: DemoStats) -> None:
    a = generate_demo_database(tmp_path / "a.db", size_bytes=400_000, seed=7)
    b = generate_demo_database(tmp_path / "b.db", size_bytes=400_000, seed=8)
    assert a.rows == demo.rows
    assert _digest(a.path) == _digest(demo.path)
    assert _digest(b.path) != _digest(a.path)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "exists.db"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_demo_database(path, size_bytes=50_000)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.db"]


def test_rejects_bad_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_demo_database(tmp_path / "x.db", size_bytes=0)
    assert not (tmp_path / "x.db").exists()


def test_kotomi_can_open_and_write_the_demo(tmp_path: Path) -> None:
    stats = generate_demo_database(tmp_path / "d.db", size_bytes=100_000, seed=3)
    conn = connect_like_kotomi(stats.path)
    conn.execute(
        "INSERT INTO comments (id, site_id, page_id, author, author_id, text)"
        " SELECT 'new', site_id, id, 'A', 'u', 't' FROM pages LIMIT 1"
    )
    assert _count(conn, "SELECT count(*) FROM comments") == stats.rows["comments"] + 1
    conn.close()
