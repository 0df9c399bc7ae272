"""The code location of each role (docs/immutability.md): a writer backs up and restores, a
keeper prunes, locks, drills and tests, both watch health; `both` (the default) is what a
single-host setup always had. The keeper's prune run locks a kept backup for its tier."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from kotomi_backup_dagster import KotomiBackupComponent
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import ConfigError
from tests.conftest import run_job
from tests.engine.keeper.conftest import make_locked_bucket
from tests.engine.stores.conftest import settings
from tests.servers import Endpoint

WRITER_JOBS = {"kotomi_backup", "restore_job"}
KEEPER_JOBS = {"kotomi_prune", "kotomi_restore_drill", "kotomi_restore_test"}
WRITER_SCHEDULES = {"kotomi_daily_backup", "kotomi_frequent_backup", "kotomi_hourly_backup"}
KEEPER_SCHEDULES = {
    "kotomi_daily_prune",
    "kotomi_weekly_restore_drill",
    "kotomi_monthly_restore_test",
}
EVERYWHERE = {"kotomi_backup_health", "kotomi_backup_run_failure_alerts"}


def contents(monkeypatch: pytest.MonkeyPatch, role: str | None) -> tuple[set[str], ...]:
    if role is not None:
        monkeypatch.setenv("KOTOMI_BACKUP_ROLE", role)
    repo = definitions_from_env().get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    return jobs, {s.name for s in repo.schedule_defs}, {s.name for s in repo.sensor_defs}


def test_each_role_loads_its_own_work_and_both_loads_everything(
    monkeypatch: pytest.MonkeyPatch, dagster_env: Path
) -> None:
    jobs, schedules, sensors = contents(monkeypatch, None)
    assert jobs == WRITER_JOBS | KEEPER_JOBS and schedules == WRITER_SCHEDULES | KEEPER_SCHEDULES
    assert EVERYWHERE | {"kotomi_prune_after_upload"} <= sensors

    jobs, schedules, sensors = contents(monkeypatch, "writer")
    assert (jobs, schedules) == (WRITER_JOBS, WRITER_SCHEDULES)
    assert sensors >= EVERYWHERE and "kotomi_prune_after_upload" not in sensors

    jobs, schedules, sensors = contents(monkeypatch, "keeper")
    assert (jobs, schedules) == (KEEPER_JOBS, KEEPER_SCHEDULES)
    # It sees no upload events (the writer's instance has them): it prunes on its schedule.
    assert sensors >= EVERYWHERE and "kotomi_prune_after_upload" not in sensors


def test_a_bad_role_stops_the_load_in_one_line(
    monkeypatch: pytest.MonkeyPatch, dagster_env: Path
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_ROLE", "reader")
    with pytest.raises(
        ConfigError, match="KOTOMI_BACKUP_ROLE 'reader': use both, writer or keeper"
    ):
        definitions_from_env()


def test_the_component_takes_the_role_and_checks_it(tmp_path: Path) -> None:
    base = {"databases": [{"name": "kotomi", "path": str(tmp_path / "k.db")}]}
    keeper = KotomiBackupComponent(**base, destinations=[str(tmp_path)], role="keeper")
    repo = keeper.options()
    assert repo.keeper.role == "keeper" and repo.keeps and not repo.writes
    with pytest.raises(ConfigError, match="role 'archivist'"):
        KotomiBackupComponent(**base, destinations=[str(tmp_path)], role="archivist").options()
    with pytest.raises(ConfigError, match="lock_slack"):
        KotomiBackupComponent(**base, destinations=[str(tmp_path)], lock_slack="soon").options()


def test_the_keepers_prune_run_locks_the_kept_backup_for_its_tier(
    monkeypatch: pytest.MonkeyPatch, kotomi_db: Path, aws_env: Endpoint, tmp_path: Path
) -> None:
    bucket = make_locked_bucket(aws_env, kotomi_db, days=1)  # shorter than the need
    run_backup(settings(kotomi_db, bucket.url))
    monkeypatch.setenv("KOTOMI_BACKUP_ROLE", "keeper")
    monkeypatch.setenv("KOTOMI_BACKUP_URL", bucket.url)
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("KOTOMI_BACKUP_KEEP_LAST", "1")  # "last": a rolling need, past the floor
    instance = DagsterInstance.ephemeral()
    result = run_job("kotomi_prune", instance=instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("kotomi__prune")
    meta = materialization.metadata
    assert meta["locks_extended"].value >= 2  # the manifest and the archive
    assert meta["lock_requests"].value >= meta["locks_extended"].value
