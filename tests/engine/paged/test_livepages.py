"""`open_live_pages`: the pages of a live WAL database, read in place under one read
transaction, are exactly the pages SQLite itself sees in that transaction.

The oracle is `LivePages.conn.serialize()`: SQLite's own image of the same read transaction
(with page 1 marked as a rollback-journal database, as `blocks()` marks it). It is compared
with the image read from the files while a real writer process commits, checkpoints (of every
kind) and vacuums; the quieter cases below pin down the WAL overlay, a WAL restart detected by
`confirm()`, and that the module keeps this process's POSIX locks.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.paged.livepages import (
    LivePages,
    LiveReadChanged,
    LiveReadUnavailable,
    open_live_pages,
)
from kotomi_backup_dagster.engine.snapshot import check_source

# The oracle reads until it has seen what it is about (counted, not timed: it once read for 7 s,
# about 170 reads, 40 checkpoints and 10 VACUUMs here): this many reads, reads with and without
# WAL frames, and this many checkpoints and VACUUMs by the writer in between.
ORACLE_READS = 150
ORACLE_CHECKPOINTS = 20
ORACLE_VACUUMS = 5
SEED = 20240611

WRITER = """\
import random, sqlite3, sys
db, seed = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=10, isolation_level=None)
c.execute("PRAGMA busy_timeout=10000")
r = random.Random(seed)
n = 0
while True:
    c.execute("BEGIN IMMEDIATE")
    for _ in range(r.randint(1, 50)):
        op = r.random()
        if op < 0.6:
            c.execute("INSERT INTO t(v) VALUES (?)", (r.randbytes(r.randint(10, 3000)),))
        elif op < 0.8:
            c.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 3)")
        else:
            c.execute(
                "UPDATE t SET v=? WHERE id=(SELECT id FROM t ORDER BY random() LIMIT 1)",
                (r.randbytes(r.randint(10, 5000)),),
            )
    c.execute("COMMIT")
    n += 1
    if n % 37 == 0:
        kind = r.choice(["PASSIVE", "RESTART", "TRUNCATE", "FULL"])
        c.execute(f"PRAGMA wal_checkpoint({kind})").fetchall()
        print("checkpoint", kind, n, flush=True)
    if n % 150 == 0:
        c.execute("VACUUM")
        print("vacuum", n, flush=True)
"""


def sqlite_view(live: LivePages) -> bytes:
    """SQLite's own image of the read transaction, page 1 marked as `blocks()` marks it."""
    view = bytearray(live.conn.serialize())
    view[18:20] = b"\x01\x01"
    return bytes(view)


def read_image(live: LivePages) -> bytes:
    image = b"".join(live.blocks())
    live.confirm()
    assert len(image) == live.size == live.page_count * live.page_size
    return image


def make_wal_db(path: Path, rows: int = 200) -> None:
    """A WAL database with a table and an index, every connection closed afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("CREATE INDEX ti ON t(v)")
        conn.execute("BEGIN")
        for i in range(rows):
            conn.execute("INSERT INTO t(v) VALUES (?)", (random.Random(i).randbytes(700),))
        conn.execute("COMMIT")
    finally:
        conn.close()


def row_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def test_image_equals_sqlites_view_under_concurrent_writes(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    make_wal_db(db, rows=0)
    log_path = tmp_path / "writer.log"
    rng = random.Random(SEED)
    ok = unavailable = changed = attempts = 0
    frames: list[int] = []
    reasons: list[str] = []
    with log_path.open("w") as log:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(SEED)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def seen_enough() -> bool:
            events = log_path.read_text().split()
            return (
                attempts >= ORACLE_READS
                and any(f > 0 for f in frames)  # reads that overlaid WAL frames...
                and any(f == 0 for f in frames)  # ...and reads of the database file alone
                and events.count("checkpoint") >= ORACLE_CHECKPOINTS
                and events.count("vacuum") >= ORACLE_VACUUMS
            )

        try:
            while not seen_enough():  # pytest's timeout ends a hang
                assert writer.poll() is None, "the writer died: " + log_path.read_text()
                time.sleep(rng.random() * 0.05)
                attempts += 1
                try:
                    with open_live_pages(db) as live:
                        image = read_image(live)
                        assert image == sqlite_view(live), (
                            f"image differs from SQLite's view at attempt {attempts} "
                            f"({live.page_count} pages, {live.overlaid_pages} WAL frames)"
                        )
                        ok += 1
                        frames.append(live.overlaid_pages)
                except LiveReadChanged as exc:
                    changed += 1
                    reasons.append(str(exc))
                except LiveReadUnavailable as exc:
                    unavailable += 1
                    reasons.append(str(exc))
            assert writer.poll() is None, "the writer died: " + log_path.read_text()
        finally:
            writer.kill()
            writer.wait(timeout=30)
    events = log_path.read_text().split()
    summary = (
        f"{attempts} attempts: {ok} ok, {unavailable} unavailable, {changed} changed; "
        f"frames>0 in {sum(1 for f in frames if f)}; reasons {sorted(set(reasons))}; "
        f"writer: {events.count('checkpoint')} checkpoints, {events.count('vacuum')} vacuums"
    )
    print(summary)
    assert ok + unavailable + changed == attempts
    assert unavailable + changed <= attempts // 10, summary


def test_quiet_database_restores_to_a_self_contained_file(tmp_path: Path) -> None:
    db = tmp_path / "quiet.db"
    make_wal_db(db)
    with open_live_pages(db) as live:
        image = read_image(live)
        assert image == sqlite_view(live)
        assert image[18:20] == b"\x01\x01"
    restored = tmp_path / "restored.db"
    restored.write_bytes(image)
    conn = sqlite3.connect(f"file:{restored}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 200
        assert not Path(f"{restored}-wal").exists()
    finally:
        conn.close()
    assert row_count(db) == 200
    assert not Path(f"{restored}-wal").exists() and not Path(f"{restored}-shm").exists()


def test_database_not_in_wal_mode_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "rollback.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        conn.execute("CREATE TABLE t(v)")
        conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    with pytest.raises(LiveReadUnavailable, match=r"journal mode is delete"), open_live_pages(db):
        pytest.fail("a rollback-journal database was read in place")


def test_uncheckpointed_wal_frames_are_overlaid(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    make_wal_db(db)  # all connections closed: every row is in the database file
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        # Several commits, so that pages have several frames and only the newest counts.
        writer.execute("DELETE FROM t WHERE id % 3 = 0")
        for i in range(150):
            writer.execute("INSERT INTO t(v) VALUES (?)", (random.Random(-i).randbytes(900),))
        for size in (300, 200, 100):
            writer.execute("UPDATE t SET v = randomblob(?) WHERE id % 7 = 1", (size,))
        expected_rows = int(writer.execute("SELECT count(*) FROM t").fetchone()[0])
        with open_live_pages(db) as live:
            assert live.overlaid_pages > 0
            image = read_image(live)
            assert image == sqlite_view(live)
            # The database file alone is the state before the writes held in the WAL.
            alone = bytearray(db.read_bytes().ljust(live.size, b"\0")[: live.size])
            alone[18:20] = b"\x01\x01"
            assert bytes(alone) != image
        assert Path(f"{db}-wal").stat().st_size > 0  # still not checkpointed
    finally:
        writer.close()
    restored = tmp_path / "restored.db"
    restored.write_bytes(image)
    assert row_count(restored) == expected_rows != 200


def test_wal_restart_during_the_read_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    make_wal_db(db)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE t SET v = randomblob(500) WHERE id % 2 = 0")
        with open_live_pages(db) as live:
            assert live.overlaid_pages > 0
            image = read_image(live)  # confirm() passes while the WAL is untouched
            assert image == sqlite_view(live)
            wal = os.open(f"{db}-wal", os.O_RDWR)
            try:
                salts = os.pread(wal, 8, 16)
                assert len(salts) == 8
                new = bytes(b ^ 0xFF for b in salts)
                assert os.pwrite(wal, new, 16) == 8  # what a WAL restart does to the header
            finally:
                os.close(wal)
            with pytest.raises(LiveReadChanged):
                live.confirm()
    finally:
        writer.close()


CHECKPOINT_PROBE = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0.2)
print(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
"""


def truncate_checkpoint_busy(db: Path) -> int:
    """From another process: 1 when a reader's lock stops a truncating checkpoint."""
    done = subprocess.run(
        [sys.executable, "-c", CHECKPOINT_PROBE, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.strip())


def test_locks_of_this_process_survive_live_reads(tmp_path: Path) -> None:
    db = tmp_path / "locks.db"
    make_wal_db(db)
    writer = sqlite3.connect(db, isolation_level=None)
    keeper = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE t SET v = randomblob(400) WHERE id % 5 = 0")
        keeper.execute("BEGIN")
        assert keeper.execute("SELECT count(*) FROM t").fetchone()[0] == 200
        # Frames newer than the keeper's snapshot: a truncating checkpoint must wait for it.
        writer.execute("INSERT INTO t(v) VALUES (randomblob(3000))")
        for _ in range(2):
            with open_live_pages(db) as live:
                assert live.overlaid_pages > 0
                assert read_image(live) == sqlite_view(live)
        assert truncate_checkpoint_busy(db) == 1, "the keeper's read lock was dropped"
        # The probe can tell: closing any descriptor of the -shm file drops this process's
        # WAL-index locks, and then nothing stops the truncating checkpoint.
        os.close(os.open(f"{db}-shm", os.O_RDONLY))
        assert truncate_checkpoint_busy(db) == 0
        keeper.execute("COMMIT")
    finally:
        keeper.close()
        writer.close()


CLOSE_PROBE = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM t").fetchone()
conn.close()
"""


def test_checking_the_live_file_keeps_this_process_connections_locks(tmp_path: Path) -> None:
    """An idle WAL connection holds a shared lock on the database file for its lifetime: it
    tells other processes they are not the last connection, which would checkpoint and
    delete the WAL on close. `check_source` must not drop it."""
    db = tmp_path / "idle.db"
    make_wal_db(db)
    keeper = sqlite3.connect(db, isolation_level=None)
    try:
        keeper.execute("PRAGMA wal_autocheckpoint=0")
        keeper.execute("UPDATE t SET v = randomblob(300)")  # frames in the WAL; keeper idle
        wal = Path(f"{db}-wal")

        def other_process_opens_and_closes() -> None:
            subprocess.run([sys.executable, "-c", CLOSE_PROBE, str(db)], check=True, timeout=60)

        check_source(db)
        check_source(db)
        other_process_opens_and_closes()
        assert wal.exists() and wal.stat().st_size > 0, "this process's shared lock was dropped"
        # The probe can tell: a descriptor of the file closed here drops the keeper's lock.
        os.close(os.open(db, os.O_RDONLY))
        other_process_opens_and_closes()
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        keeper.close()


@pytest.mark.parametrize("page_size", [512, 65536])
def test_smallest_and_largest_page_sizes(tmp_path: Path, page_size: int) -> None:
    """65536 is stored as 1 in the WAL index header; 512 packs the most frames per WAL."""
    db = tmp_path / f"p{page_size}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size={page_size}")
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(60):
            conn.execute("INSERT INTO t(v) VALUES (?)", (random.Random(i).randbytes(900),))
        conn.execute("DELETE FROM t WHERE id % 3 = 0")
        with open_live_pages(db) as live:
            assert live.page_size == page_size and live.overlaid_pages > 0
            assert read_image(live) == sqlite_view(live)
    finally:
        conn.close()
