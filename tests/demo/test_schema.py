"""Kotomi's schema and connection as the demo package makes them: tables, indexes, pragmas,
the ad-hoc migration, the constraints, and the column lists rows are inserted by."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo.rows import Comment
from kotomi_backup_dagster.demo.schema import SCHEMA_SQL, columns, connect_like_kotomi, insert_sql
from kotomi_backup_dagster.engine.kotomi import KOTOMI_TABLES


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


def test_rows_are_built_in_the_column_order_of_the_file(conn: sqlite3.Connection) -> None:
    assert columns("users")[-1] == "reputation_score"  # the migrated column comes last
    assert Comment._fields == columns("comments")
    _site(conn)
    comment = Comment.posted(
        "c9", "s1", "p1", ("u9", "Ann", None), "hello", "c1", "approved", ("a1", "t2"), "t1"
    )
    conn.execute(insert_sql("comments"), comment)
    row = conn.execute("SELECT * FROM comments WHERE id = 'c9'").fetchone()
    assert row == tuple(comment)
    assert (comment.author_id, comment.author, comment.moderated_by) == ("u9", "Ann", "a1")
    assert comment.updated_at == "t2"  # the moderation is its last update
