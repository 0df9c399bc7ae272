"""Failed steps read well: the headline the UI shows first is the project's one-line cause,
never Dagster's retry or op wrapper; a drill that fails marks its asset failed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import Proxies, run_cli, run_job
from tests.defs.alerts.conftest import unreachable_s3
from tests.engine.stores.conftest import is_upload
from tests.servers import Endpoint, Rule


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
    assert line.startswith(f"upload of kotomi to file://{dagster_env} failed: "), line
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
            f"drill of kotomi backup {manifest.backup_id} at file://{dagster_env} failed: "
        ), line
    assert list_backups(LocalStore(dagster_env), "kotomi").backups == [manifest]


def _cause(line: str) -> str:
    """A failed upload's line up to what comes next, with the backup's id left out."""
    return re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{6}", "<id>", line.split("; the backup is not stored")[0])


def test_a_failed_upload_reads_the_same_in_dagster_and_the_cli_naming_the_destination_once(
    kotomi_db: Path,
    s3_bucket: str,
    aws_env: Endpoint,
    proxy_for: Proxies,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxy_for(aws_env)
    proxy.rules.append(Rule(is_upload, "drop"))  # the bucket answers, every upload breaks
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    url = f"s3://{s3_bucket}/offsite"
    env = {
        "KOTOMI_DB_PATH": str(kotomi_db),
        "KOTOMI_BACKUP_URL": url,
        "KOTOMI_BACKUP_STAGING_DIR": str(tmp_path / "staging"),
        "KOTOMI_BACKUP_RETRIES": "1",
        "KOTOMI_BACKUP_UPLOAD_RETRIES": "0",
    }
    proc = run_cli("backup", env=env)
    assert proc.returncode == 1, proc.stderr
    cli_line = proc.stderr.strip().splitlines()[-1].removeprefix("kotomi-backup: error: ")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_job("kotomi_backup")
    assert not result.success
    _, dagster_line = headline(result)

    for line in (cli_line, dagster_line):
        assert line.startswith(f"upload of kotomi to {url} failed: uploading "), line
        assert line.count(url) == 1, line  # was "upload to X failed: X: uploading ..."
        assert "run the upload again" not in line, line
    assert _cause(cli_line) == _cause(dagster_line)
    assert cli_line.endswith(", then run the backup again"), cli_line
    again = "re-execute the run from failure (only the upload runs again)"
    assert dagster_line.endswith(f", then {again}"), dagster_line  # not "run the upload again"


def test_an_unreachable_endpoint_is_named_and_dagster_says_what_to_check_once_retries_are_spent(
    kotomi_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = unreachable_s3(monkeypatch, tmp_path)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("KOTOMI_DB_PATH", str(kotomi_db))
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "0")
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "2")
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", "0")
    result = run_job("kotomi_backup")
    assert not result.success
    retried = [  # Dagster's RetryRequested, caused by the step's Failure
        e.event_specific_data.error.cause.message
        for e in result.all_events
        if e.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert len(retried) == 2
    assert "the upload step runs again (attempt 2 of 3)" in retried[0], retried[0]
    assert "the upload step runs again (attempt 3 of 3)" in retried[1], retried[1]
    _, line = headline(result)
    assert f"could not connect to the endpoint {endpoint}" in line, line
    assert "not stored there after 3 attempts of the upload step" in line, line
    assert "check that the destination is reachable" in line and "AWS_ENDPOINT_URL" in line, line
    assert "run the upload again" not in line, line

    proc = run_cli("backup", env={"KOTOMI_DB_PATH": str(kotomi_db), "KOTOMI_BACKUP_URL": url})
    assert proc.returncode == 1, proc.stderr
    cli_line = proc.stderr.strip().splitlines()[-1]
    assert f"could not connect to the endpoint {endpoint}" in cli_line, cli_line
    assert "check that the destination is reachable" in cli_line, cli_line
    assert cli_line.endswith("then run the backup again"), cli_line
