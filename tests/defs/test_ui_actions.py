"""Every action of the Dagster UI, in-process, as the UI launches it: "Materialize" on each
single asset, "Execute" on the single check, "Materialize selected", "Materialize all",
"Re-execute from failure" and "Re-execute all"; each works or fails at once with one line
that says what to run first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    instance_for_test,
    reconstructable,
)

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.layout import list_backups, list_drills
from kotomi_backup_dagster.engine.stores import LocalStore

SNAPSHOT, ARCHIVE, UPLOAD = (AssetKey(["kotomi", s]) for s in ("snapshot", "archive", "upload"))
PRUNE, DRILL, TEST = (AssetKey(["kotomi", s]) for s in ("prune", "restore_drill", "restore_test"))
VERIFY = AssetCheckKey(SNAPSHOT, "verify")


def global_job() -> JobDefinition:
    """The job the UI's Materialize buttons launch (module level: re-executable)."""
    return definitions_from_env().resolve_implicit_global_asset_job_def()


@pytest.fixture
def env(dagster_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "2")  # a run alone must not retry
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", "0")
    return dagster_env


def click(
    instance: DagsterInstance,
    assets: list[AssetKey],
    checks: list[AssetCheckKey] | None = None,
) -> ExecuteInProcessResult:
    """One UI launch: the selected assets with their checks, or the given checks alone."""
    job = global_job().get_subset(
        asset_selection=set(assets), asset_check_selection=None if checks is None else set(checks)
    )
    return job.execute_in_process(instance=instance, raise_on_error=False)


def events(result: Any, kind: str) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == kind]


def headline(result: Any) -> str:
    """The first line the UI shows for the run's failed step."""
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    return str(error.message).splitlines()[0]


def materialized(result: Any, key: AssetKey) -> dict[str, Any]:
    mats = [
        m
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and (m := e.event_specific_data.materialization).asset_key == key
    ]
    assert len(mats) == 1, f"{key.to_user_string()} materialized {len(mats)} times"
    return {k: v.value for k, v in mats[0].metadata.items()}


def test_each_stage_alone_works_on_the_newest_staged_backup_or_says_what_to_run_first(
    env: Path,
) -> None:
    with instance_for_test() as instance:
        # Nothing staged yet: each stage fails at once (no retry), naming what to run first.
        cases = [
            ([UPLOAD], None, "no archived backup of kotomi waits for its upload"),
            ([ARCHIVE], None, "no verified snapshot of kotomi waits for its archive"),
            ([], [VERIFY], "no snapshot of kotomi is staged: materialize kotomi/snapshot first"),
        ]
        for assets, checks, expected in cases:
            result = click(instance, assets, checks)
            assert not result.success
            assert expected in headline(result), headline(result)
            assert not events(result, "STEP_UP_FOR_RETRY")
        assert not env.exists() or list_backups(LocalStore(env), "kotomi").backups == []

        # Materialize snapshot (its check runs too), then each next stage on its own.
        snap = click(instance, [SNAPSHOT])
        assert snap.success
        backup_id = materialized(snap, SNAPSHOT)["backup_id"]
        again = click(instance, [], [VERIFY])  # Execute the check alone
        assert again.success
        [evaluation] = again.get_asset_check_evaluations()
        assert evaluation.passed and evaluation.metadata["backup_id"].value == backup_id
        archived = click(instance, [ARCHIVE])
        assert archived.success and materialized(archived, ARCHIVE)["backup_id"] == backup_id
        uploaded = click(instance, [UPLOAD])
        assert uploaded.success and materialized(uploaded, UPLOAD)["backup_id"] == backup_id
        assert [m.backup_id for m in list_backups(LocalStore(env), "kotomi").backups] == [backup_id]
        # Everything is uploaded now: the upload alone says so again.
        assert "no archived backup" in headline(click(instance, [UPLOAD]))

        for key in (PRUNE, DRILL, TEST):
            result = click(instance, [key])
            assert result.success, headline(result)
        assert [d.ok for d in list_drills(LocalStore(env), "kotomi", backup_id)] == [True, True]


def test_materialize_selected_and_materialize_all_run_in_lineage_order(env: Path) -> None:
    with instance_for_test() as instance:
        assert click(instance, [SNAPSHOT]).success
        # "Materialize selected": archive + upload of the staged snapshot, in one run.
        selected = click(instance, [ARCHIVE, UPLOAD])
        assert selected.success
        first = materialized(selected, UPLOAD)["backup_id"]
        assert materialized(selected, ARCHIVE)["backup_id"] == first

        # "Materialize all": a new backup, then prune and both drills after its upload.
        every = global_job().execute_in_process(instance=instance)
        assert every.success
        order = events(every, "STEP_SUCCESS")
        newest = materialized(every, UPLOAD)["backup_id"]
        assert newest > first
        assert order.index("kotomi__upload") < min(
            order.index(f"kotomi__{s}") for s in ("prune", "restore_drill", "restore_test")
        )
        assert order.index("kotomi__snapshot_verify") < order.index("kotomi__archive")
        assert materialized(every, DRILL)["backup_id"] == newest  # the drill saw this upload
        assert materialized(every, TEST)["drilled"] == 2


def backup_job() -> JobDefinition:
    return definitions_from_env().resolve_job_def("kotomi_backup")


def test_reexecute_all_takes_a_new_backup(env: Path) -> None:
    job = reconstructable(backup_job)
    with instance_for_test() as instance:
        env.mkdir()
        blocker = env / "kotomi"
        blocker.write_text("a file where the backup folder should be")
        failed = execute_job(job, instance=instance, raise_on_error=False)
        assert not failed.success
        blocker.unlink()
        # "Re-execute all": every step again, from a fresh snapshot.
        again = execute_job(
            job, instance=instance, reexecution_options=ReexecutionOptions(failed.run_id)
        )
        assert again.success
        assert set(events(again, "STEP_SUCCESS")) == {
            "kotomi__snapshot",
            "kotomi__snapshot_verify",
            "kotomi__archive",
            "kotomi__upload",
        }
    ids = {m.backup_id for m in list_backups(LocalStore(env), "kotomi").backups}
    stale = failed.asset_materializations_for_node("kotomi__snapshot")[0].metadata["backup_id"]
    assert len(ids) == 1 and stale.value not in ids
