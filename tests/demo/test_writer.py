"""The simulated Kotomi: statements that commit alone, requests retried on SQLITE_BUSY, and
every request that returned is in a snapshot taken after it."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi, generate_demo_database
from kotomi_backup_dagster.engine.kotomi import (
    KOTOMI_READ_QUERIES,
    KOTOMI_TABLES,
    read_query_params,
)


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

    def await_commits(count: int) -> None:
        """Until the writer has committed `count` comments (pytest's timeout ends a hang)."""
        while len(committed) < count and not errors:
            time.sleep(0.005)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        reader = connect_like_kotomi(path)
        for _ in range(3):
            await_commits(len(committed) + 20)  # each snapshot begins amid new commits
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
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert len(committed) >= 60
    ids = {r[0] for r in reader.execute("SELECT id FROM comments")}
    assert set(committed) <= ids
    reader.close()
