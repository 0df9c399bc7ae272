"""The backup job in Dagster, executed in-process: stages, checks, metadata, re-execution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    FloatMetadataValue,
    IntMetadataValue,
    JobDefinition,
    ReexecutionOptions,
    RunRequest,
    build_schedule_context,
    execute_job,
    instance_for_test,
    reconstructable,
)
from dagster._core.storage.dagster_run import DagsterRunStatus

from kotomi_backup_dagster.defs.databases import databases_from_env
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import corrupt_table


def kotomi_backup_job() -> JobDefinition:
    """Module-level, so Dagster can reconstruct the job for re-execution."""
    return definitions_from_env().resolve_job_def("kotomi_backup")


@pytest.fixture
def env(dagster_env: Path) -> Path:
    return dagster_env


def step_keys(result: object, kind: str) -> set[str]:
    events = result.all_events  # type: ignore[attr-defined]
    return {e.step_key for e in events if e.event_type_value == kind}


def test_backup_job_runs_each_stage_and_records_metadata_that_plots(env: Path) -> None:
    result = kotomi_backup_job().execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success
    assert step_keys(result, "STEP_SUCCESS") == {
        "kotomi__snapshot",
        "kotomi__snapshot_verify",
        "kotomi__archive",
        "kotomi__upload",
    }
    backups = list_backups(LocalStore(env), "kotomi").backups
    assert len(backups) == 1
    backup_id = backups[0].backup_id

    mats = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("kotomi__upload")
        + result.asset_materializations_for_node("kotomi__archive")
        + result.asset_materializations_for_node("kotomi__snapshot")
    }
    assert mats["snapshot"]["backup_id"].value == backup_id
    assert isinstance(mats["snapshot"]["db_bytes"], IntMetadataValue)
    assert isinstance(mats["archive"]["compression_ratio"], FloatMetadataValue)
    assert mats["archive"]["bytes_out"].value == backups[0].archive.size
    assert mats["upload"]["destinations_ok"].value == 1
    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    assert check.metadata["rows_comments"].value == backups[0].tables["comments"]
    staging = Path(mats["snapshot"]["staging"].value)
    assert not staging.exists(), "staging kept after a complete upload"


def test_corrupt_database_fails_the_check_and_stops_the_run(env: Path, kotomi_db: Path) -> None:
    corrupt_table(kotomi_db)

    result = kotomi_backup_job().execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert "problems" in check.metadata
    assert "kotomi__archive" not in step_keys(result, "STEP_SUCCESS")
    assert "kotomi__upload" not in step_keys(result, "STEP_SUCCESS")
    assert not env.exists() or list_backups(LocalStore(env), "kotomi").backups == []


def test_reexecution_after_a_failed_upload_reruns_only_the_upload(env: Path) -> None:
    env.mkdir()
    blocker = env / "kotomi"
    blocker.write_text("a file where the backup folder should be")  # the store breaks
    job = reconstructable(kotomi_backup_job)
    with instance_for_test() as instance:
        first = execute_job(job, instance=instance, raise_on_error=False)
        assert not first.success
        assert step_keys(first, "STEP_FAILURE") == {"kotomi__upload"}
        assert list_backups(LocalStore(env), "kotomi").backups == []

        blocker.unlink()  # the destination is back
        options = ReexecutionOptions.from_failure(first.run_id, instance)
        second = execute_job(job, instance=instance, reexecution_options=options)
        assert second.success
        assert step_keys(second, "STEP_START") == {"kotomi__upload"}
        backups = list_backups(LocalStore(env), "kotomi").backups
        assert len(backups) == 1
        snap = first.asset_materializations_for_node("kotomi__snapshot")[0]
        assert backups[0].backup_id == snap.metadata["backup_id"].value


def test_reexecution_after_a_later_run_uploads_the_failed_runs_own_backup(env: Path) -> None:
    """A scheduled run lands between a failed upload and its re-execution: the re-execution
    must upload the backup its own run staged, not the later run's (one shared pickle per
    asset did, and failed because that one's staging was already gone)."""
    env.mkdir()
    blocker = env / "kotomi"
    blocker.write_text("a file where the backup folder should be")
    job = reconstructable(kotomi_backup_job)
    with instance_for_test() as instance:
        failed = execute_job(job, instance=instance, raise_on_error=False)
        assert not failed.success
        blocker.unlink()
        later = execute_job(job, instance=instance)  # the next scheduled backup
        assert later.success
        options = ReexecutionOptions.from_failure(failed.run_id, instance)
        again = execute_job(job, instance=instance, reexecution_options=options)
        assert again.success, again.get_step_failure_events()
        assert step_keys(again, "STEP_START") == {"kotomi__upload"}

    def staged_id(result: object) -> str:
        node = result.asset_materializations_for_node("kotomi__snapshot")  # type: ignore[attr-defined]
        return str(node[0].metadata["backup_id"].value)

    listed = {b.backup_id for b in list_backups(LocalStore(env), "kotomi").backups}
    assert listed == {staged_id(failed), staged_id(later)}


def test_daily_schedule_is_on_at_two_in_the_configured_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_TIMEZONE", "Europe/Berlin")
    defs = definitions_from_env()
    schedule = defs.resolve_schedule_def("kotomi_daily_backup")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "kotomi_backup"


def test_schedule_skips_while_a_backup_of_the_same_database_runs(env: Path) -> None:
    defs = definitions_from_env()
    schedule = defs.resolve_schedule_def("kotomi_daily_backup")
    job = defs.resolve_job_def("kotomi_backup")
    with instance_for_test() as instance:
        context = build_schedule_context(instance=instance)
        first = schedule.evaluate_tick(context)
        assert first.run_requests and isinstance(first.run_requests[0], RunRequest)
        assert first.run_requests[0].tags["kotomi_backup/database"] == "kotomi"
        run = instance.create_run_for_job(
            job, status=DagsterRunStatus.STARTED, tags={"kotomi_backup/database": "kotomi"}
        )
        busy = schedule.evaluate_tick(build_schedule_context(instance=instance))
        assert not busy.run_requests
        assert busy.skip_message and run.run_id in busy.skip_message
        instance.report_run_failed(run)
        again = schedule.evaluate_tick(build_schedule_context(instance=instance))
        assert again.run_requests


def test_each_configured_database_gets_its_own_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", "blog=/data/blog.db,docs-site=/data/docs.db")
    specs = databases_from_env()
    assert [s.name for s in specs] == ["blog", "docs-site"]
    defs = definitions_from_env()
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert AssetKey(["blog", "upload"]) in keys
    assert AssetKey(["docs-site", "snapshot"]) in keys
    # One lineage per database: the upload feeds its own prune and drills, never the other's.
    assert graph.get(AssetKey(["docs-site", "prune"])).parent_keys == {
        AssetKey(["docs-site", "upload"])
    }
    # One job and one schedule for both; each tick asks for one run per database.
    schedule = defs.resolve_schedule_def("kotomi_daily_backup")
    with instance_for_test() as instance:
        tick = schedule.evaluate_tick(build_schedule_context(instance=instance))
    requests = {r.tags["kotomi_backup/database"]: r for r in tick.run_requests or []}
    assert set(requests) == {"blog", "docs-site"}
    assert set(requests["docs-site"].asset_selection or []) == {
        AssetKey(["docs-site", stage]) for stage in ("snapshot", "archive", "upload")
    }
    job = defs.resolve_job_def("kotomi_backup")
    assert json.loads(json.dumps(job.tags))["kotomi_backup/area"] == "backup"


def test_code_location_loads() -> None:
    from kotomi_backup_dagster.definitions import defs

    assert defs.resolve_job_def("kotomi_backup") is not None


def test_a_permanent_upload_failure_is_not_retried(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "2")
    env.mkdir()
    (env / "kotomi").write_text("a file where the backup folder should be")
    result = kotomi_backup_job().execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    assert step_keys(result, "STEP_FAILURE") == {"kotomi__upload"}
    assert not step_keys(result, "STEP_UP_FOR_RETRY"), "a configuration error was retried"


def test_a_second_database_backs_up_and_drills_on_its_own(
    env: Path, kotomi_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The second database's stages are copies of the first's: they work on its own file."""
    import shutil

    blog = tmp_path / "blog.db"
    shutil.copyfile(kotomi_db, blog)
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", f"kotomi={kotomi_db},blog={blog}")
    everything = definitions_from_env().resolve_implicit_global_asset_job_def()
    keys = {AssetKey(["blog", s]) for s in ("snapshot", "archive", "upload", "restore_drill")}
    result = everything.get_subset(asset_selection=keys).execute_in_process(
        instance=DagsterInstance.ephemeral()
    )
    assert result.success
    [backup] = list_backups(LocalStore(env), "blog").backups
    assert list_backups(LocalStore(env), "kotomi").backups == []
    snap = result.asset_materializations_for_node("blog__snapshot")[0].metadata
    assert backup.backup_id == snap["backup_id"].value
    drill = result.asset_materializations_for_node("blog__restore_drill")[0].metadata
    assert drill["backup_id"].value == backup.backup_id
    assert {e.check_name for e in result.get_asset_check_evaluations()} >= {"verify", "integrity"}


def test_an_outage_keeps_only_the_newest_staged_backups_and_the_log_names_the_dropped(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Hourly runs through an outage each keep their staged backup for re-execution: only
    the newest KOTOMI_BACKUP_KEEP_STAGED stay (before: every one, for a week)."""
    from kotomi_backup_dagster.engine.staging import StagingArea

    monkeypatch.setenv("KOTOMI_BACKUP_KEEP_STAGED", "2")
    env.mkdir()
    (env / "kotomi").write_text("a file where the backup folder should be")  # the outage
    staging = StagingArea(tmp_path / "staging", "kotomi")
    made: list[str] = []
    for run in range(4):
        instance = DagsterInstance.ephemeral()
        result = kotomi_backup_job().execute_in_process(instance=instance, raise_on_error=False)
        assert step_keys(result, "STEP_FAILURE") == {"kotomi__upload"}
        [snapshot] = result.asset_materializations_for_node("kotomi__snapshot")
        made.append(str(snapshot.metadata["backup_id"].value))
        assert staging.kept() == made[-2:]
        said = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.step_key == "kotomi__snapshot" and "dropped older staged" in entry.user_message
        ]
        if run < 2:
            assert said == []
        else:  # this run's snapshot dropped the one kept two runs before
            assert len(said) == 1 and said[0].endswith(made[run - 2]), said
