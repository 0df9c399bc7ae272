"""Pruning real stores: exactly the planned set stays, safety rails hold, kills tear nothing."""

import json
import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import ConfigError
from kotomi_backup_dagster.engine.layout import DrillRecord, list_backups, write_drill
from kotomi_backup_dagster.engine.manifest import Manifest, rfc3339
from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy, plan_retention
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import popen_cli, run_cli

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def clone_backups(db: Path, dest: Path, times: list[datetime]) -> list[str]:
    """One real backup, copied under other ids and times: real archives, chosen times."""
    source = run_backup(BackupSettings.from_env(db_path=db, urls=(str(dest / "seed"),))).manifest
    seed_dir = dest / "seed" / "kotomi" / source.backup_id
    ids = []
    for n, moment in enumerate(times):
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
        target = dest / "kotomi" / backup_id
        target.mkdir(parents=True)
        shutil.copyfile(seed_dir / "kotomi.db.zst", target / "kotomi.db.zst")
        data = json.loads((seed_dir / "manifest.json").read_text())
        data.update(backup_id=backup_id, created_at=rfc3339(moment))
        data["archive"]["key"] = f"kotomi/{backup_id}/kotomi.db.zst"
        (target / "manifest.json").write_text(json.dumps(data))
        ids.append(backup_id)
    shutil.rmtree(dest / "seed")
    return ids


def every(hours: float, count: int, end: datetime = NOW) -> list[datetime]:
    return [end - timedelta(hours=hours * i) for i in range(count)]


def daily_only_env(dest: Path, keep_daily: int) -> dict[str, str]:
    """The CLI's settings: this destination, and only `keep_daily` daily backups kept."""
    env = {"KOTOMI_BACKUP_URL": str(dest), "KOTOMI_BACKUP_KEEP_DAILY": str(keep_daily)}
    env.update({f"KOTOMI_BACKUP_KEEP_{k}": "0" for k in ("WEEKLY", "MONTHLY", "YEARLY")})
    return env


def listed(dest: Path) -> set[str]:
    return {m.backup_id for m in list_backups(LocalStore(dest), "kotomi").backups}


def test_a_year_of_daily_backups_prunes_to_exactly_the_planned_set(
    kotomi_db: Path, tmp_path: Path
) -> None:
    times = every(24, 400)
    ids = dict(zip(times, clone_backups(kotomi_db, tmp_path, times), strict=True))
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)
    expected = {ids[d.time] for d in plan_retention(times, policy, now=NOW) if d.keep}
    result = prune_store(LocalStore(tmp_path), "kotomi", policy, now=NOW)
    assert listed(tmp_path) == expected
    assert len(expected) < 30 and result.bytes_freed > 0
    assert set(result.removed) == set(ids.values()) - expected
    remaining = {p.name for p in (tmp_path / "kotomi").iterdir()}
    assert remaining == expected, "a removed backup left files behind"


def test_a_failed_drill_fills_no_slot_and_is_kept_for_inspection(
    kotomi_db: Path, tmp_path: Path
) -> None:
    times = every(24, 10)
    ids = clone_backups(kotomi_db, tmp_path, times)
    store = LocalStore(tmp_path)
    failed = ids[1]
    write_drill(
        store, "kotomi", DrillRecord(failed, rfc3339(NOW), False, ["broken"], 1.0, 1, "t", {})
    )
    result = prune_store(store, "kotomi", RetentionPolicy(keep_daily=3), now=NOW)
    kept = {p.manifest.backup_id: p.reasons for p in result.kept}
    assert kept[failed] == ["drill failed: kept for inspection"]
    # The slot the failed backup would have filled goes to the next older one.
    assert set(kept) == {ids[0], ids[1], ids[2], ids[3]}
    assert listed(tmp_path) == set(kept)


def test_newest_is_kept_whatever_the_policy_and_empty_policy_is_refused(
    kotomi_db: Path, tmp_path: Path
) -> None:
    ids = clone_backups(kotomi_db, tmp_path, every(24 * 400, 3))  # all far apart
    store = LocalStore(tmp_path)
    result = prune_store(store, "kotomi", RetentionPolicy(keep_hourly=1), now=NOW)
    assert "newest" in result.kept[0].reasons
    assert listed(tmp_path) == {ids[0]}
    with pytest.raises(ConfigError, match="keeps nothing"):
        prune_store(
            store,
            "kotomi",
            RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0),
        )
    assert listed(tmp_path) == {ids[0]}


def test_interrupted_uploads_are_cleaned_after_a_day_only(kotomi_db: Path, tmp_path: Path) -> None:
    clone_backups(kotomi_db, tmp_path, every(1, 2))
    old = tmp_path / "kotomi" / f"{NOW - timedelta(days=2):%Y%m%dT%H%M%SZ}-aaaaaa"
    fresh = tmp_path / "kotomi" / f"{NOW - timedelta(hours=1):%Y%m%dT%H%M%SZ}-bbbbbb"
    for orphan in (old, fresh):
        orphan.mkdir()
        (orphan / "kotomi.db.zst").write_bytes(b"half an upload")
    result = prune_store(LocalStore(tmp_path), "kotomi", RetentionPolicy(keep_last=5), now=NOW)
    assert result.orphans_removed == [old.name]
    assert not old.exists() and fresh.exists()


def test_cli_dry_run_explains_and_removes_nothing(kotomi_db: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ids = clone_backups(kotomi_db, tmp_path, every(24, 20, end=now))
    env = daily_only_env(tmp_path, keep_daily=5)
    proc = run_cli("prune", "--dry-run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["destinations"][0]
    decisions = {b["backup_id"]: (b["keep"], b["reasons"]) for b in plan["backups"]}
    assert [i for i in ids if decisions[i][0]] == ids[:5]
    assert decisions[ids[0]][1][0] == "newest"
    assert decisions[ids[10]] == (False, [])
    assert listed(tmp_path) == set(ids)
    shown = run_cli("list", "--json", env=env)
    tiers = {
        b["backup_id"]: b["tiers"] for b in json.loads(shown.stdout)["destinations"][0]["backups"]
    }
    assert tiers[ids[1]] == [f"daily {datetime.fromisoformat(decisions[ids[1]][1][0][6:]).date()}"]


def test_killed_prune_never_leaves_a_listed_backup_without_its_archive(
    kotomi_db: Path, tmp_path: Path
) -> None:
    times = every(6, 800)
    clone_backups(kotomi_db, tmp_path, times)
    env = daily_only_env(tmp_path, keep_daily=3)
    folder = tmp_path / "kotomi"
    interrupted = 0
    for threshold in (795, 600, 400, 200):
        proc = popen_cli("prune", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill as soon as the prune has got this far: mid-deletion, not before or after.
        while proc.poll() is None and sum(1 for _ in os.scandir(folder)) > threshold:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += sum(1 for _ in os.scandir(folder)) > 3
        for manifest in list_backups(LocalStore(tmp_path), "kotomi").backups:
            archive = tmp_path / manifest.archive.key
            assert archive.exists() and archive.stat().st_size == manifest.archive.size
    assert interrupted >= 2, "the kills never landed mid-prune"
    done = run_cli("prune", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert len(listed(tmp_path)) == 3


def test_manifest_roundtrip_keeps_unknown_fields_out(tmp_path: Path) -> None:
    raw = json.dumps({"format": 3}).encode()
    with pytest.raises(Exception, match="not supported"):
        Manifest.from_json(raw)


def test_the_newest_full_backup_stays_in_a_store_that_mixes_formats(
    kotomi_db: Path, tmp_path: Path
) -> None:
    """Frequent paged backups and a daily full one: whatever the tiers say, one archive that
    restores without this tool (`zstd -d`) stays."""
    dest = tmp_path / "backups"
    full_settings = BackupSettings.from_env(db_path=kotomi_db, urls=(str(dest),))
    older_full = run_backup(full_settings).manifest
    newest_full = run_backup(full_settings).manifest
    paged = BackupSettings.from_env(db_path=kotomi_db, urls=(str(dest),), backup_format="paged")
    newest = [run_backup(paged).manifest for _ in range(2)][-1]
    result = prune_store(LocalStore(dest), "kotomi", RetentionPolicy(keep_last=1))
    by_id = {p.manifest.backup_id: p for p in result.plan}
    assert by_id[newest.backup_id].keep
    assert by_id[newest_full.backup_id].reasons == ["newest full archive"]
    assert listed(dest) == {newest.backup_id, newest_full.backup_id}
    assert older_full.backup_id in result.removed
