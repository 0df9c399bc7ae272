"""What the speed work (issue 8) must not change: the checks find the same damage, nothing
unverified is uploaded, restores still refuse a bad archive."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine import verify as verify_module
from kotomi_backup_dagster.engine.archive import extract_archive, write_archive
from kotomi_backup_dagster.engine.backup import (
    stage_snapshot,
    verify_and_archive,
)
from kotomi_backup_dagster.engine.errors import BackupError, DiskFull
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.snapshot import take_snapshot
from kotomi_backup_dagster.engine.verify import verify_database
from tests.conftest import SmallDisk, flip_page_header


def _index_mismatch_db(path: Path) -> Path:
    """Index content that disagrees with its table: only integrity_check sees it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    conn.execute("CREATE INDEX t_b ON t (b)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(k, -k) for k in range(500)])
    conn.execute("CREATE TABLE u (x TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO u VALUES (?)", [(str(k),) for k in range(100)])
    conn.commit()
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_schema SET sql = 'CREATE INDEX t_b ON t (a)' WHERE name = 't_b'")
    conn.commit()
    conn.close()
    return path


def test_split_full_check_finds_index_damage_that_quick_check_misses(tmp_path: Path) -> None:
    db = _index_mismatch_db(tmp_path / "idx.db")
    assert verify_database(db, mode="quick", profile="generic").ok
    one = verify_database(db, mode="full", profile="generic", workers=1)
    two = verify_database(db, mode="full", profile="generic", workers=2)
    assert not one.ok and not two.ok
    assert set(two.problems) == set(one.problems)
    assert two.tables == one.tables == {"t": 500, "u": 100}


def test_split_full_check_finds_page_damage(kotomi_db: Path, tmp_path: Path) -> None:
    snap = take_snapshot(kotomi_db, tmp_path / "snap.db").path
    conn = sqlite3.connect(snap)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'reactions'").fetchone()[0]
    conn.close()
    assert verify_database(snap, mode="full", workers=2).ok
    flip_page_header(snap, root, page_size)
    assert not verify_database(snap, mode="full", workers=1).ok
    assert not verify_database(snap, mode="full", workers=2).ok


def test_large_files_use_the_split_check(
    kotomi_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = verify_module._parallel_integrity_check

    def spy(conn: sqlite3.Connection, path: Path, workers: int) -> list[str]:
        calls.append(workers)
        return real(conn, path, workers)

    monkeypatch.setattr(verify_module, "_parallel_integrity_check", spy)
    monkeypatch.setattr(verify_module, "PARALLEL_CHECK_MIN_BYTES", 0)
    monkeypatch.setattr(verify_module.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert verify_database(kotomi_db, mode="full").ok
    assert calls == [2]


def test_transient_snapshot_is_one_step_and_complete(kotomi_db: Path, tmp_path: Path) -> None:
    snap = take_snapshot(kotomi_db, tmp_path / "snap.db", durable=False)
    assert snap.steps == 1 and snap.busy_retries == 0
    assert not (tmp_path / ".snap.db.partial").exists()
    assert verify_database(snap.path, mode="full").ok


def test_overlapped_check_failure_deletes_the_archive(kotomi_db: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(kotomi_db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'comments'").fetchone()[0]
    conn.close()
    flip_page_header(kotomi_db, root, page_size)
    settings = BackupSettings(
        db_path=kotomi_db, urls=(str(tmp_path / "b"),), staging_dir=tmp_path / "staging"
    )
    staged, _ = stage_snapshot(settings, durable=False)
    report, manifest, _ = verify_and_archive(staged, settings, durable=False)
    assert not report.ok and manifest is None
    assert not staged.archive_path(False).exists()
    assert not (staged.workdir / "manifest.json").exists()


def test_threaded_extract_round_trips_and_refuses_a_truncated_archive(
    kotomi_db: Path, tmp_path: Path
) -> None:
    snap = take_snapshot(kotomi_db, tmp_path / "snap.db").path
    made = write_archive(snap, tmp_path / "a.zst", durable=False)
    with made.path.open("rb") as fh:
        got = extract_archive(fh, tmp_path / "out.db", encrypted=False)
    assert (got.db_sha256, got.archive_sha256) == (made.db_sha256, made.sha256)
    assert (tmp_path / "out.db").read_bytes() == snap.read_bytes()
    cut = tmp_path / "cut.zst"
    cut.write_bytes(made.path.read_bytes()[: made.size // 2])
    with cut.open("rb") as fh, pytest.raises(BackupError, match=r"truncated|damaged"):
        extract_archive(fh, tmp_path / "cut.db", encrypted=False)
    assert not (tmp_path / "cut.db").exists()


def test_extract_reports_a_full_disk_from_its_writer_thread(
    kotomi_db: Path, tmp_path: Path, small_disk: SmallDisk
) -> None:
    snap = take_snapshot(kotomi_db, tmp_path / "snap.db").path
    made = write_archive(snap, tmp_path / "a.zst", durable=False)
    disk = small_disk(kib=256)  # the 2 MB database does not fit
    with (
        made.path.open("rb") as fh,
        disk.limits(),
        pytest.raises(DiskFull, match="disk full"),
    ):
        extract_archive(fh, disk.path / "out.db", encrypted=False)
    assert list(disk.path.iterdir()) == []
