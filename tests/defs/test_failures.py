"""Failed steps read well: the headline the UI shows first is the project's one-line cause,
never Dagster's retry or op wrapper; a drill that fails marks its asset failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import run_job


def headline(result: Any) -> tuple[str, str]:
    """(the error class, the first line the UI shows) of the run's one failed step."""
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    first = str(error.message).splitlines()[0]
    return str(error.cls_name), first.split(": ", 1)[1] if ": " in first else first


def test_an_upload_out_of_retries_fails_with_its_cause_not_the_retry_wrapper(
    dagster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "1")
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", "0")
    dagster_env.mkdir()
    # Every write fails with ELOOP (even as root): not a configuration error, so retried.
    (dagster_env / "kotomi").symlink_to(dagster_env / "kotomi")
    result = run_job("kotomi_backup")
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events if e.step_key == "kotomi__upload"]
    assert kinds.count("STEP_UP_FOR_RETRY") == 1 and kinds.count("STEP_FAILURE") == 1
    cls, line = headline(result)
    assert cls == "Failure"
    assert line.startswith(f"upload to file://{dagster_env} failed: "), line
    assert "max_retries" not in line


def test_a_failed_restore_step_says_why_not_error_occurred_while_executing_op(
    dagster_env: Path, kotomi_db: Path, tmp_path: Path
) -> None:
    run_backup(BackupSettings.from_env(db_path=kotomi_db, urls=(str(dagster_env),)))
    result = (
        definitions_from_env()
        .resolve_job_def("restore_job")
        .execute_in_process(
            run_config={
                "ops": {
                    "choose_backup_to_restore": {
                        "config": {
                            "backup": "20261127T020000Z-abc123",
                            "target_path": str(kotomi_db.parent / "restored.db"),
                        }
                    }
                }
            },
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )
    assert not result.success
    cls, line = headline(result)
    assert cls == "Failure"
    assert line.startswith("restore of kotomi: ") and "20261127T020000Z-abc123" in line, line
    assert "Error occurred while executing" not in line


def test_a_drill_of_a_damaged_archive_fails_the_asset_with_the_cause(
    dagster_env: Path, kotomi_db: Path
) -> None:
    settings = BackupSettings.from_env(db_path=kotomi_db, urls=(str(dagster_env),))
    manifest = run_backup(settings).manifest
    archive = dagster_env / manifest.archive.key
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    with instance_for_test() as instance:
        result = run_job("kotomi_restore_drill", instance)
        assert not result.success
        # No green materialization beside red checks: the asset failed.
        assert not result.asset_materializations_for_node("kotomi__restore_drill")
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["checksums"] is False
        cls, line = headline(result)
        assert cls == "Failure"
        assert line.startswith(
            f"drill of backup {manifest.backup_id} at file://{dagster_env} failed: "
        ), line
    assert list_backups(LocalStore(dagster_env), "kotomi").backups == [manifest]
