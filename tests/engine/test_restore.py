"""Restore, drills and recovery through the engine and the real CLI."""

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo import connect_like_kotomi, generate_demo_database
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.drill import drill_backup
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.layout import DrillRecord, list_backups, list_drills, write_drill
from kotomi_backup_dagster.engine.restore import restore_database
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import AgeKey, flip_page_header, kill_cli_after, one_line_error, run_cli


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backup(db: Path, dest: Path, **extra: object):  # type: ignore[no-untyped-def]
    return run_backup(BackupSettings.from_env(db_path=db, urls=(str(dest),), **extra)).manifest


def rows(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, text FROM comments ORDER BY id").fetchall()
    finally:
        conn.close()


def make_stale_wal(db: Path, tag: str = "stale") -> int:
    """Leave committed frames in db-wal, as a crashed Kotomi would: rows not in any backup."""
    conn = connect_like_kotomi(db)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(comments)") if r[1] != "id"]
    conn.execute(
        f"INSERT INTO comments (id, {', '.join(cols)}) "
        f"SELECT '{tag}-' || id, {', '.join(cols)} FROM comments "
        "WHERE id NOT LIKE 'stale%' LIMIT 50"
    )
    saved_db, saved_wal = db.read_bytes(), Path(f"{db}-wal").read_bytes()
    conn.close()  # the last close checkpoints; put the crash-time files back
    db.write_bytes(saved_db)
    Path(f"{db}-wal").write_bytes(saved_wal)
    Path(f"{db}-shm").unlink(missing_ok=True)
    return len(saved_wal)


def test_restore_over_a_stale_wal_gives_exactly_the_backup(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    manifest = backup(kotomi_db, dest)
    expected = rows(kotomi_db)
    assert make_stale_wal(kotomi_db) > 0
    with_wal = rows(kotomi_db)  # opening replays the WAL: the stale rows are live data now
    assert len(with_wal) == len(expected) + 50
    make_stale_wal(kotomi_db, "stale2")  # and leave crash-time files again

    result = restore_database([LocalStore(dest)], "kotomi", kotomi_db)
    assert sha256(kotomi_db) == manifest.db_sha256
    assert not Path(f"{kotomi_db}-wal").exists()
    # Kotomi opens it in WAL mode: the content is the backup's, no stale row comes back.
    conn = connect_like_kotomi(kotomi_db)
    conn.close()
    assert rows(kotomi_db) == expected
    # The copy kept beside it has the old database with its WAL: nothing was thrown away.
    assert result.kept_copy is not None
    assert Path(f"{result.kept_copy}-wal").exists()
    assert len(rows(result.kept_copy)) == len(expected) + 100


def test_restore_into_a_new_path_keeps_nothing_and_sets_the_mode(
    kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    manifest = backup(kotomi_db, dest)
    target = tmp_path / "new" / "kotomi.db"
    target.parent.mkdir()
    result = restore_database([LocalStore(dest)], "kotomi", target)
    assert result.kept_copy is None
    assert sha256(target) == manifest.db_sha256
    assert (
        target.stat().st_mode & 0o777 == 0o600
    )  # users' data and secrets: private (README, Security)
    assert [p.name for p in target.parent.iterdir()] == ["kotomi.db"]


def test_restore_refuses_a_database_in_use_unless_forced(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    backup(kotomi_db, dest)
    kotomi = connect_like_kotomi(kotomi_db)  # Kotomi is running: its pool holds the file open
    kotomi.execute("SELECT count(*) FROM comments").fetchone()
    before = kotomi_db.read_bytes()
    proc = run_cli("restore", "latest", "--db", str(kotomi_db), "--from", str(dest))
    assert proc.returncode == 2
    assert "stop Kotomi first" in one_line_error(proc)
    assert kotomi_db.read_bytes() == before
    kotomi.close()


def test_restore_before_a_time_picks_the_newest_older_backup(kotomi_db: Path, tmp_path: Path):
    dest = tmp_path / "backups"
    first = backup(kotomi_db, dest)
    time.sleep(1.1)
    backup(kotomi_db, dest)
    target = tmp_path / "pitr.db"
    proc = run_cli(
        "restore",
        "latest",
        "--db",
        str(target),
        "--from",
        str(dest),
        "--json",
        "--before",
        first.created_at.replace("Z", "") + ".5+00:00",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["backup_id"] == first.backup_id


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "wrong key", "missing manifest"])
def test_damaged_backups_fail_restore_and_drill_with_one_line_and_touch_nothing(
    damage: str, kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    dest = tmp_path / "backups"
    manifest = backup(kotomi_db, dest, age_recipients=age_key.recipient)
    archive = dest / manifest.archive.key
    identity = age_key.identity_file
    if damage == "flipped byte":
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0x10
        archive.write_bytes(bytes(data))
    elif damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "wrong key":
        import pyrage

        identity = tmp_path / "other-key.txt"
        identity.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    else:
        (archive.parent / "manifest.json").unlink()
    live = tmp_path / "live" / "kotomi.db"
    live.parent.mkdir()
    shutil.copyfile(kotomi_db, live)
    before = live.read_bytes()
    env = {"KOTOMI_BACKUP_AGE_IDENTITY": str(identity), "KOTOMI_BACKUP_URL": str(dest)}
    restored = run_cli("restore", manifest.backup_id, "--db", str(live), env=env)
    drilled = run_cli("drill", manifest.backup_id, env=env)
    for proc in (restored, drilled):
        assert proc.returncode in (1, 2), proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    one_line_error(restored)
    assert live.read_bytes() == before
    assert sorted(p.name for p in live.parent.iterdir()) == ["kotomi.db"]
    if damage == "wrong key":
        assert restored.returncode == 2 and "does not match" in restored.stderr
        assert "AGE-SECRET-KEY" not in restored.stderr + drilled.stdout + drilled.stderr


def test_drill_records_a_failed_drill_for_a_tampered_backup(kotomi_db: Path, tmp_path: Path):
    dest = tmp_path / "backups"
    manifest = backup(kotomi_db, dest)
    store = LocalStore(dest)
    good = drill_backup(store, manifest)
    assert good.ok and good.checks["integrity"] and good.checks["kotomi_queries"]
    archive = dest / manifest.archive.key
    data = bytearray(archive.read_bytes())
    data[100] ^= 0x01
    archive.write_bytes(bytes(data))
    bad = drill_backup(store, manifest)
    assert not bad.ok and bad.checks["checksums"] is False
    drills = list_drills(store, "kotomi", manifest.backup_id)
    assert [d.ok for d in drills] == [False, True]  # newest first
    assert len(drills) == 2


def test_killed_restore_leaves_the_old_or_the_new_database_whole(tmp_path: Path) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=30_000_000, seed=5)
    dest = tmp_path / "backups"
    manifest = backup(db, dest)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("DELETE FROM comments WHERE rowid % 2 = 0")  # the live file moves on
    conn.commit()
    conn.close()
    old = sha256(db)
    outcomes = set()
    for delay in (0.15, 0.3, 0.5, 0.8, 1.2, 3.0):
        kill_cli_after(delay, "restore", "latest", "--db", str(db), "--from", str(dest))
        now = sha256(db)
        assert now in (old, manifest.db_sha256), "a torn database"
        kept = sorted(tmp_path.glob("kotomi.db.before-restore-*"))
        if now == manifest.db_sha256:
            outcomes.add("new")
            assert kept and sha256(kept[-1]) == old, "the pre-restore copy is missing"
            # Put the old one back for the next round.
            shutil.copyfile(kept[-1], db)
            for k in kept:
                k.unlink()
        else:
            outcomes.add("old")
    assert "old" in outcomes


def test_recover_salvages_rows_around_a_corrupt_page(kotomi_db: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(kotomi_db)
    conn.execute("PRAGMA journal_mode=DELETE")
    total = conn.execute("SELECT count(*) FROM comments").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    # A leaf page in the middle of the comments table.
    leaf = conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'comments' AND pagetype = 'leaf' "
        "ORDER BY pageno LIMIT 1 OFFSET 3"
    ).fetchone()[0]
    conn.close()
    flip_page_header(kotomi_db, leaf, page_size)
    out = tmp_path / "salvaged.db"
    proc = run_cli("recover", str(kotomi_db), str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    saved = report["tables"]["comments"]["saved"]
    assert 0.5 * total < saved < total
    assert report["tables"]["comments"]["errors"] >= 1
    assert report["tables"]["sites"]["saved"] > 0
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM comments").fetchone()[0] == saved
    conn.close()
    again = run_cli("recover", str(kotomi_db), str(out))
    assert again.returncode == 2 and "nothing overwritten" in one_line_error(again)


def test_recover_never_calls_an_empty_salvage_a_success(tmp_path: Path) -> None:
    db = tmp_path / "wrecked.db"
    generate_demo_database(db, size_bytes=200_000, seed=1)
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page
    db.write_bytes(bytes(data))
    proc = run_cli("recover", str(db), str(tmp_path / "out.db"))
    assert proc.returncode == 1
    assert "nothing can be salvaged" in one_line_error(proc) or "nothing could be" in proc.stderr
    assert not (tmp_path / "out.db").exists()


def test_drill_of_a_missing_identity_is_a_config_error(kotomi_db: Path, tmp_path: Path, age_key):
    dest = tmp_path / "b"
    manifest = backup(kotomi_db, dest, age_recipients=age_key.recipient)
    with pytest.raises(ConfigError):
        drill_backup(LocalStore(dest), manifest)
    assert list_backups(LocalStore(dest), "kotomi").backups
    with pytest.raises(BackupError):
        restore_database([LocalStore(dest)], "kotomi", tmp_path / "x.db", which="nope")


def test_a_swap_that_fails_puts_the_live_wal_back(
    kotomi_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "backups"
    backup(kotomi_db, dest)
    make_stale_wal(kotomi_db)  # committed rows that live only in the WAL
    before = {p.name: p.read_bytes() for p in kotomi_db.parent.iterdir()}
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(str(dst)) == kotomi_db:  # the final rename: a real I/O error there
            raise OSError(5, "Input/output error")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing_replace)
    for keep in (True, False):
        with pytest.raises(BackupError, match="is unchanged"):
            restore_database([LocalStore(dest)], "kotomi", kotomi_db, keep_copy=keep)
        after = {p.name: p.read_bytes() for p in kotomi_db.parent.iterdir()}
        assert after == before, "the live database or its WAL changed"


def test_restore_onto_a_directory_is_refused_before_any_download(
    kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    backup(kotomi_db, dest)
    proc = run_cli("restore", "latest", "--db", str(tmp_path), "--from", str(dest))
    assert proc.returncode == 2
    assert "not a file" in one_line_error(proc)


def test_restore_runs_the_full_check_only_on_bytes_never_fully_checked(
    kotomi_db: Path, tmp_path: Path
) -> None:
    """A quick_check when these very bytes passed integrity_check before (a drill, or a backup
    with --verify full); otherwise, or with --verify full, the full check. --json says which
    and why."""
    dest = tmp_path / "backups"
    quick = backup(kotomi_db, dest)

    def restored(*args: str) -> dict[str, str]:
        target = tmp_path / "r" / "kotomi.db"
        shutil.rmtree(target.parent, ignore_errors=True)
        target.parent.mkdir()
        proc = run_cli("restore", *args, "--db", str(target), "--from", str(dest), "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert sha256(target) == result["db_sha256"]
        check: dict[str, str] = result["check"]
        return check

    assert restored(quick.backup_id) == {
        "mode": "full",
        "why": "no earlier integrity_check of these bytes",
    }
    drill_backup(LocalStore(dest), quick)
    after_drill = restored(quick.backup_id)
    assert (
        after_drill["mode"] == "quick"
        and "passed integrity_check in the drill" in after_drill["why"]
    )
    assert restored(quick.backup_id, "--verify", "full")["mode"] == "full"

    full = backup(kotomi_db, dest, verify_mode="full")
    checked = restored(full.backup_id)
    assert checked["mode"] == "quick" and "when backed up" in checked["why"]

    # A failed drill proves nothing: the next restore checks in full again.
    failed = backup(kotomi_db, dest)
    write_drill(
        LocalStore(dest),
        "kotomi",
        DrillRecord(
            backup_id=failed.backup_id,
            drilled_at="2026-11-27T04:00:00Z",
            ok=False,
            problems=["integrity: page 7 never used"],
            rto_seconds=1.0,
            db_size=failed.db_size,
            tool_version="test",
            checks={"integrity": False},
        ),
    )
    assert restored(failed.backup_id)["mode"] == "full"


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "tampered", "deleted"])
def test_every_restore_failure_names_the_backup_its_destination_and_that_nothing_changed(
    damage: str, kotomi_db: Path, tmp_path: Path
) -> None:
    """A damaged archive used to say only "archive is damaged: zstd says ...", unlike every
    other restore failure."""
    dest = tmp_path / "backups"
    manifest = backup(kotomi_db, dest)
    archive = dest / manifest.archive.key
    data = bytearray(archive.read_bytes())
    if damage == "flipped byte":  # zstd meets a corrupt block
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
    elif damage == "truncated":
        archive.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "tampered":  # another valid archive: only the checksums tell
        other = tmp_path / "other.db"
        generate_demo_database(other, size_bytes=300_000, seed=99)
        archive.write_bytes(_zstd(other))
    else:
        archive.unlink()
    live = tmp_path / "live" / "kotomi.db"
    live.parent.mkdir()
    shutil.copyfile(kotomi_db, live)
    before = live.read_bytes()
    restored = run_cli("restore", "latest", "--db", str(live), env={"KOTOMI_BACKUP_URL": str(dest)})
    assert restored.returncode == 1, restored.stderr
    line = one_line_error(restored)
    assert line.startswith(f"kotomi-backup: error: backup {manifest.backup_id} at file://{dest}")
    assert line.endswith(f"; nothing restored, {live} is unchanged"), line
    assert line.count(f"file://{dest}") == 1, line
    assert live.read_bytes() == before


def _zstd(path: Path) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(path.read_bytes())
