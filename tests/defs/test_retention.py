"""The retention area in Dagster: prune after each upload, its metadata, the backup cadence."""

from pathlib import Path

import pytest
from dagster import (
    DefaultScheduleStatus,
    Definitions,
    build_sensor_context,
    instance_for_test,
)

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import LocalStore


def defs() -> Definitions:
    return definitions_from_env()


@pytest.fixture
def dest(dagster_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KOTOMI_BACKUP_KEEP_LAST", "2")
    for kind in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        monkeypatch.setenv(f"KOTOMI_BACKUP_KEEP_{kind}", "0")
    return dagster_env


def test_each_upload_starts_one_prune_that_keeps_the_policy(dest: Path) -> None:
    d = defs()
    sensor = d.resolve_sensor_def("kotomi_prune_after_upload")
    with instance_for_test() as instance:
        backup = d.resolve_job_def("kotomi_backup")
        for _ in range(3):
            assert backup.execute_in_process(instance=instance).success
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=d))
        assert len(tick.run_requests) == 1  # an asset sensor answers the newest event
        again = sensor.evaluate_tick(
            build_sensor_context(instance=instance, cursor=tick.cursor, definitions=d)
        )
        assert not again.run_requests
        assert len(list_backups(LocalStore(dest), "kotomi").backups) == 3

        result = d.resolve_job_def("kotomi_prune").execute_in_process(instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("kotomi__prune")[0].metadata
    assert meta["kept"].value == 2  # keep_last=2
    kept = list_backups(LocalStore(dest), "kotomi").backups
    assert len(kept) == meta["kept"].value
    assert meta["removed"].value == 1
    assert meta["bytes_freed"].value > 0
    assert kept[0].backup_id in meta["kept_backups"].value


def test_a_failed_prune_does_not_fail_the_backup(dest: Path) -> None:
    d = defs()
    with instance_for_test() as instance:
        assert d.resolve_job_def("kotomi_backup").execute_in_process(instance=instance).success
        # A policy that keeps nothing is refused: the prune run fails, alone.
        import os

        for kind in ("LAST", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
            os.environ[f"KOTOMI_BACKUP_KEEP_{kind}"] = "0"
        try:
            pruned = (
                defs()
                .resolve_job_def("kotomi_prune")
                .execute_in_process(instance=instance, raise_on_error=False)
            )
        finally:
            for kind in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
                os.environ.pop(f"KOTOMI_BACKUP_KEEP_{kind}")
        assert not pruned.success
        runs = instance.get_run_records()
        backup_runs = [r for r in runs if r.dagster_run.job_name == "kotomi_backup"]
        assert backup_runs[0].dagster_run.is_success
    assert len(list_backups(LocalStore(dest), "kotomi").backups) == 1


def test_backup_cadence_follows_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_FREQUENT_CRON", "off")  # without the 15-minute backup
    d = defs()
    assert d.resolve_schedule_def("kotomi_daily_backup").default_status == (
        DefaultScheduleStatus.RUNNING
    )
    assert d.resolve_schedule_def("kotomi_hourly_backup").default_status == (
        DefaultScheduleStatus.STOPPED
    )
    for keep in ("24", "-1"):  # -1: every hourly backup is kept (unlimited)
        monkeypatch.setenv("KOTOMI_BACKUP_KEEP_HOURLY", keep)
        d = defs()
        hourly = d.resolve_schedule_def("kotomi_hourly_backup")
        assert hourly.default_status == DefaultScheduleStatus.RUNNING
        assert hourly.cron_schedule == "0 * * * *"
        assert d.resolve_schedule_def("kotomi_daily_backup").default_status == (
            DefaultScheduleStatus.STOPPED
        )
    assert d.resolve_schedule_def("kotomi_daily_prune").cron_schedule == "0 3 * * *"
