"""The default cadence: a paged backup every 15 minutes beside the daily full one, one prune an
hour at most after uploads, and Dagster's run history kept bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test

from kotomi_backup_dagster.defs.backup.assets import FORMAT_TAG
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.defs.history import HISTORY_SENSOR
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import LocalStore


def test_a_paged_backup_every_15_minutes_is_on_by_default_beside_the_daily_full_one(
    dagster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = definitions_from_env()
    frequent = defs.resolve_schedule_def("kotomi_frequent_backup")
    daily = defs.resolve_schedule_def("kotomi_daily_backup")
    assert frequent.cron_schedule == "*/15 * * * *"
    assert frequent.default_status == daily.default_status == DefaultScheduleStatus.RUNNING
    with instance_for_test() as instance:
        context = build_schedule_context(instance=instance)
        [request] = frequent.evaluate_tick(context).run_requests or []
        assert request.tags[FORMAT_TAG] == "paged"
        job = defs.resolve_job_def("kotomi_backup")
        # The schedule's run stores a paged backup; the job run as it is, a full one.
        assert job.execute_in_process(instance=instance, tags=request.tags).success
        assert job.execute_in_process(instance=instance).success
    formats = [m.kind for m in list_backups(LocalStore(dagster_env), "kotomi").backups]
    assert formats == ["full", "paged"]  # newest first

    monkeypatch.setenv("KOTOMI_BACKUP_FREQUENT_CRON", "off")
    off = definitions_from_env().resolve_schedule_def("kotomi_frequent_backup")
    assert off.default_status == DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("KOTOMI_BACKUP_FREQUENT_CRON", "*/5 * * * *")
    assert definitions_from_env().resolve_schedule_def("kotomi_frequent_backup").cron_schedule == (
        "*/5 * * * *"
    )
    monkeypatch.setenv("KOTOMI_BACKUP_FREQUENT_CRON", "every five minutes")
    with pytest.raises(Exception, match="KOTOMI_BACKUP_FREQUENT_CRON"):
        definitions_from_env()


def test_uploads_closer_than_an_hour_share_one_prune(dagster_env: Path) -> None:
    defs = definitions_from_env()
    sensor = defs.resolve_sensor_def("kotomi_prune_after_upload")
    backup = defs.resolve_job_def("kotomi_backup")
    with instance_for_test() as instance:
        assert backup.execute_in_process(instance=instance).success
        first = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
        assert len(first.run_requests) == 1
        assert backup.execute_in_process(instance=instance).success
        soon = sensor.evaluate_tick(
            build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs)
        )
        assert not soon.run_requests  # 15 minutes later: the next prune catches up
        # An hour after the last prune request, the newest upload gets its prune.
        cursor = {k: [v[0], v[1] - 3600] for k, v in json.loads(first.cursor or "{}").items()}
        later = sensor.evaluate_tick(
            build_sensor_context(instance=instance, cursor=json.dumps(cursor), definitions=defs)
        )
        assert len(later.run_requests) == 1


def test_run_history_older_than_the_limit_is_deleted_but_each_jobs_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_RUN_HISTORY_DAYS", "30")
    defs = definitions_from_env()
    sensor = defs.resolve_sensor_def(HISTORY_SENSOR)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    with instance_for_test() as instance:
        old = [
            create_run_for_test(instance, job_name="kotomi_backup", status=DagsterRunStatus.SUCCESS)
            for _ in range(3)
        ]
        prune = create_run_for_test(
            instance, job_name="kotomi_prune", status=DagsterRunStatus.SUCCESS
        )
        other = create_run_for_test(  # another code location's job: never ours to delete
            instance, job_name="someone_elses_job", status=DagsterRunStatus.SUCCESS
        )
        # Age them: the run storage's own update time, 40 days back.
        back = datetime.now(UTC) - timedelta(days=40)
        _age_runs(instance, [r.run_id for r in [*old, prune, other]], back)
        recent = create_run_for_test(
            instance, job_name="kotomi_backup", status=DagsterRunStatus.SUCCESS
        )
        result = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
        assert "deleted 3 run(s)" in (result.skip_message or "")
        left = {r.run_id for r in instance.get_runs()}
        # The old backups went but the newest backup run (recent) stays; the prune job's
        # only run stays (its newest), and so does the other location's.
        assert left == {recent.run_id, prune.run_id, other.run_id}
        assert len(instance.get_runs()) == 3  # and the sensor started no run of its own


def _age_runs(instance: DagsterInstance, run_ids: list[str], moment: datetime) -> None:
    from dagster._core.storage.runs.schema import RunsTable

    storage = instance.run_storage
    with storage.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(
            RunsTable.update()
            .where(RunsTable.c.run_id.in_(run_ids))
            .values(
                update_timestamp=moment.replace(tzinfo=None),
                create_timestamp=moment.replace(tzinfo=None),
            )
        )


def test_the_frequent_cadence_keeps_its_promise_on_staleness_in_one_figure() -> None:
    """With a backup every 15 minutes the newest is stale after 3 h (2 h 15 min rounded up
    to the hour), not 36 h; the upload's freshness, its description and the health sensor
    say the same figure (the UI showed "2 hours" where the sensor said "2.2 h")."""
    from kotomi_backup_dagster.defs.options import options_from_env

    options = options_from_env()
    assert options.backup_interval() == timedelta(minutes=15)
    thresholds = options.health_thresholds()
    assert thresholds.stale_after == timedelta(hours=3)
    assert "stale after 3 h," in thresholds.describe()
    graph = definitions_from_env().resolve_asset_graph()
    upload = graph.get(AssetKey(["kotomi", "upload"]))
    policy = upload.freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == timedelta(hours=3)
    assert "Overdue after 3 h without a new backup" in (upload.description or "")
