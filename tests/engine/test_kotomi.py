"""What the engine knows of Kotomi: its 14 tables and the read queries a restore drill runs."""

from __future__ import annotations

from pathlib import Path

from kotomi_backup_dagster.demo import connect_like_kotomi, generate_demo_database
from kotomi_backup_dagster.engine.kotomi import (
    KOTOMI_READ_QUERIES,
    KOTOMI_TABLES,
    read_query_params,
)


def test_kotomi_tables_are_the_14() -> None:
    assert len(KOTOMI_TABLES) == 14
    assert len(set(KOTOMI_TABLES)) == 14
    assert "comments" in KOTOMI_TABLES and "notification_log" in KOTOMI_TABLES


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


def test_read_query_params_on_empty_database(tmp_path: Path) -> None:
    conn = connect_like_kotomi(tmp_path / "kotomi.db")
    try:
        assert read_query_params(conn) is None
    finally:
        conn.close()
