"""Tests of the Kotomi schema, connection settings, simulated writer and read queries."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.demo import generate_demo_database
from kotomi_backup_dagster.engine.kotomi import (
    KOTOMI_READ_QUERIES,
    KOTOMI_TABLES,
    SCHEMA_SQL,
    KotomiWriter,
    connect_like_kotomi,
    format_default_timestamp,
    format_go_timestamp,
    random_uuid4,
    read_query_params,
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect_like_kotomi(tmp_path / "kotomi.db")
    yield c
    c.close()


def _tables(c: sqlite3.Connection) -> set[str]:
    rows = c.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {r[0] for r in rows}


def _site(c: sqlite3.Connection) -> tuple[str, str]:
    c.execute("INSERT INTO admin_users (id, email, name, auth0_sub) VALUES ('a1', 'a@x', 'A', 's')")
    c.execute("INSERT INTO sites (id, owner_id, name) VALUES ('s1', 'a1', 'Site')")
    c.execute("INSERT INTO pages (id, site_id, path) VALUES ('p1', 's1', '/')")
    c.execute(
        "INSERT INTO allowed_reactions (id, site_id, name, emoji, reaction_type)"
        " VALUES ('r1', 's1', 'like', '+', 'both')"
    )
    c.execute(
        "INSERT INTO comments (id, site_id, page_id, author, author_id, text)"
        " VALUES ('c1', 's1', 'p1', 'Ann', 'u1', 'hi')"
    )
    return "s1", "p1"


def test_kotomi_tables_are_the_14() -> None:
    assert len(KOTOMI_TABLES) == 14
    assert len(set(KOTOMI_TABLES)) == 14
    assert "comments" in KOTOMI_TABLES and "notification_log" in KOTOMI_TABLES


def test_schema_creates_the_14_tables_and_indexes(conn: sqlite3.Connection) -> None:
    assert _tables(conn) == set(KOTOMI_TABLES)
    indexes = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    assert indexes == {
        "idx_users_site_email",
        "idx_comments_site_page",
        "idx_comments_parent",
        "idx_comments_status",
        "idx_comments_author",
    }
    # No triggers, no views, no user_version, as in Kotomi.
    kinds = "SELECT count(*) FROM sqlite_master WHERE type IN ('trigger', 'view')"
    assert conn.execute(kinds).fetchone()[0] == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    users_cols = [r[1] for r in conn.execute("PRAGMA table_info(users)")]
    assert users_cols[-1] == "reputation_score"
    pk = sorted((r[5], r[1]) for r in conn.execute("PRAGMA table_info(users)") if r[5])
    assert [name for _, name in pk] == ["site_id", "id"]
    assert conn.execute("PRAGMA foreign_key_list(comments)").fetchall() == []
    assert "IF NOT EXISTS" in SCHEMA_SQL


def test_connection_settings_match_kotomi(conn: sqlite3.Connection) -> None:
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -64000
    assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY


def test_schema_is_idempotent_and_migrates_old_users_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    # A users table from before Kotomi's ad-hoc migration: no reputation_score.
    old.execute(
        "CREATE TABLE users (site_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,"
        " email TEXT, avatar_url TEXT, profile_url TEXT, is_verified BOOLEAN DEFAULT 0,"
        " roles TEXT, first_seen TIMESTAMP, last_seen TIMESTAMP, created_at TIMESTAMP,"
        " updated_at TIMESTAMP, PRIMARY KEY (site_id, id))"
    )
    old.execute("INSERT INTO users (site_id, id, name) VALUES ('s', 'u', 'n')")
    old.commit()
    old.close()
    for _ in range(2):
        c = connect_like_kotomi(path)
        cols = [r[1] for r in c.execute("PRAGMA table_info(users)")]
        assert "reputation_score" in cols
        assert c.execute("SELECT reputation_score FROM users").fetchone()[0] == 0
        assert _tables(c) == set(KOTOMI_TABLES)
        c.close()


def test_check_constraints_reject_bad_rows(conn: sqlite3.Connection) -> None:
    _site(conn)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO comments (id, site_id, page_id, author, author_id, text, status)"
            " VALUES ('c2', 's1', 'p1', 'A', 'u', 't', 'spam')"
        )
    with pytest.raises(sqlite3.IntegrityError):  # both targets set
        conn.execute(
            "INSERT INTO reactions (id, page_id, comment_id, allowed_reaction_id, user_id)"
            " VALUES ('x1', 'p1', 'c1', 'r1', 'u1')"
        )
    with pytest.raises(sqlite3.IntegrityError):  # no target
        conn.execute(
            "INSERT INTO reactions (id, page_id, comment_id, allowed_reaction_id, user_id)"
            " VALUES ('x2', NULL, NULL, 'r1', 'u1')"
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO allowed_reactions (id, site_id, name, emoji, reaction_type)"
            " VALUES ('r2', 's1', 'x', 'x', 'everything')"
        )
    with pytest.raises(sqlite3.IntegrityError):  # UNIQUE(site_id, path)
        conn.execute("INSERT INTO pages (id, site_id, path) VALUES ('p2', 's1', '/')")
    # Good rows pass: one page reaction, one comment reaction, all three statuses.
    conn.execute(
        "INSERT INTO reactions (id, page_id, comment_id, allowed_reaction_id, user_id)"
        " VALUES ('x3', 'p1', NULL, 'r1', 'u1')"
    )
    conn.execute(
        "INSERT INTO reactions (id, page_id, comment_id, allowed_reaction_id, user_id)"
        " VALUES ('x4', NULL, 'c1', 'r1', 'u1')"
    )
    for i, status in enumerate(("pending", "approved", "rejected")):
        conn.execute(
            "INSERT INTO comments (id, site_id, page_id, author, author_id, text, status)"
            " VALUES (?, 's1', 'p1', 'A', 'u', 't', ?)",
            (f"ok{i}", status),
        )
    # comments have no foreign keys: an orphan comment is accepted.
    conn.execute(
        "INSERT INTO comments (id, site_id, page_id, author, author_id, text)"
        " VALUES ('orphan', 'nosite', 'nopage', 'A', 'u', 't')"
    )
    # users: composite key (site_id, id).
    conn.execute("INSERT INTO users (site_id, id, name) VALUES ('s1', 'u1', 'A')")
    conn.execute("INSERT INTO users (site_id, id, name) VALUES ('s2', 'u1', 'A')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO users (site_id, id, name) VALUES ('s1', 'u1', 'B')")


def test_value_helpers() -> None:
    rng = random.Random(3)
    u = random_uuid4(rng)
    assert len(u) == 36 and u[14] == "4" and u[19] in "89ab"
    assert random_uuid4(random.Random(3)) == u
    assert format_default_timestamp(0) == "1970-01-01 00:00:00"
    assert format_go_timestamp(0, 120_000_000, -420) == "1969-12-31 17:00:00.12-07:00"
    assert format_go_timestamp(0) == "1970-01-01 00:00:00+00:00"


def test_writer_statements_commit_alone(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    conn = connect_like_kotomi(path)
    other = connect_like_kotomi(path)
    writer = KotomiWriter(conn, random.Random(1))
    ids = [writer.post_comment() for _ in range(30)]
    assert not conn.in_transaction
    seen = {r[0] for r in other.execute("SELECT id FROM comments")}
    assert set(ids) <= seen
    for _ in range(60):
        writer.toggle_reaction()
    assert not conn.in_transaction
    counts = {t: other.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in KOTOMI_TABLES}
    for table in ("admin_users", "sites", "users", "pages", "comments", "allowed_reactions"):
        assert counts[table] > 0, table
    assert counts["notification_queue"] == 30
    assert counts["reactions"] > 0
    statuses = {r[0] for r in other.execute("SELECT DISTINCT status FROM comments")}
    assert statuses == {"pending", "approved", "rejected"}
    assert other.execute("SELECT count(*) FROM comments WHERE parent_id IS NOT NULL").fetchone()[0]
    assert other.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    other.close()


def test_request_retries_when_busy(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    conn = connect_like_kotomi(path)
    conn.execute("PRAGMA busy_timeout=5")  # make SQLITE_BUSY surface quickly
    blocker = connect_like_kotomi(path)
    writer = KotomiWriter(conn, random.Random(2), comment_share=1.0)
    blocker.execute("BEGIN IMMEDIATE")
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(writer.request()))
    thread.start()
    time.sleep(0.3)
    assert not result  # still waiting behind the write lock
    blocker.execute("COMMIT")
    thread.join(10)
    assert result and result[0] is not None
    row = blocker.execute("SELECT count(*) FROM comments WHERE id = ?", (result[0],)).fetchone()
    assert row[0] == 1
    conn.close()
    blocker.close()


def test_request_in_thread_committed_ids_are_in_snapshot(tmp_path: Path) -> None:
    """A writer thread runs requests while another connection reads and snapshots the file:
    every comment id whose request returned before the snapshot began is in the snapshot."""
    path = tmp_path / "live.db"
    generate_demo_database(path, size_bytes=200_000, seed=5)
    committed: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            wconn = connect_like_kotomi(path)
            writer = KotomiWriter(wconn, random.Random(9))
            next_at = time.monotonic()
            while not stop.is_set():
                cid = writer.request()
                if cid is not None:
                    committed.append(cid)
                next_at += 1 / 500
                time.sleep(max(0.0, next_at - time.monotonic()))
            wconn.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        reader = connect_like_kotomi(path)
        time.sleep(0.3)
        for _ in range(3):
            reader.execute("SELECT count(*) FROM comments").fetchone()
            params = read_query_params(reader)
            assert params is not None
            for query in KOTOMI_READ_QUERIES.values():
                reader.execute(query, params).fetchall()
            before = list(committed)
            snapshot = sqlite3.connect(":memory:")
            reader.backup(snapshot)
            ids = {r[0] for r in snapshot.execute("SELECT id FROM comments")}
            missing = [cid for cid in before if cid not in ids]
            assert not missing
            assert snapshot.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            snapshot.close()
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert len(committed) > 50
    ids = {r[0] for r in reader.execute("SELECT id FROM comments")}
    assert set(committed) <= ids
    reader.close()


def test_read_queries_run_on_demo_database(tmp_path: Path) -> None:
    stats = generate_demo_database(tmp_path / "demo.db", size_bytes=300_000, seed=1)
    conn = connect_like_kotomi(stats.path)
    params = read_query_params(conn)
    assert params is not None
    assert set(KOTOMI_READ_QUERIES) == {
        "approved_comments_with_reactions",
        "reaction_counts_by_site",
        "pending_moderation_queue",
    }
    for name, query in KOTOMI_READ_QUERIES.items():
        rows = conn.execute(query, params).fetchall()
        assert rows, name
    # The page query only returns approved comments of that page.
    ids = [
        r[0] for r in conn.execute(KOTOMI_READ_QUERIES["approved_comments_with_reactions"], params)
    ]
    marks = conn.execute(
        f"SELECT DISTINCT status, page_id FROM comments WHERE id IN ({','.join('?' * len(ids))})",
        ids,
    ).fetchall()
    assert marks == [("approved", params["page_id"])]
    # The moderation queue of a site holds pending comments only.
    pending_site = conn.execute(
        "SELECT site_id FROM comments WHERE status = 'pending' LIMIT 1"
    ).fetchone()[0]
    rows = conn.execute(
        KOTOMI_READ_QUERIES["pending_moderation_queue"], {"site_id": pending_site}
    ).fetchall()
    assert rows
    conn.close()


def test_read_query_params_on_empty_database(conn: sqlite3.Connection) -> None:
    assert read_query_params(conn) is None
