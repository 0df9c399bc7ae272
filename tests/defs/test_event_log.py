"""What a run's event log says while a step works, not only in the stderr tab: each store
retry with its attempt number and the wait before the next one, each destination's upload,
and the archive's progress in bytes and percent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tests.conftest import run_job
from tests.defs.alerts.conftest import unreachable_s3


def step_lines(instance: DagsterInstance, run_id: str, step: str) -> list[str]:
    """The plain log lines of one step (context.log), in order; Dagster's events left out."""
    return [
        e.user_message
        for e in instance.all_logs(run_id)
        if e.step_key == step and e.dagster_event is None
    ]


def test_upload_retries_and_the_archive_progress_are_in_the_event_log(
    kotomi_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = unreachable_s3(monkeypatch, tmp_path)
    monkeypatch.setenv("KOTOMI_DB_PATH", str(kotomi_db))
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "2")
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "0")
    instance = DagsterInstance.ephemeral()
    result = run_job("kotomi_backup", instance)
    assert not result.success

    upload = step_lines(instance, result.run_id, "kotomi__upload")
    assert any(line.startswith(f"{url}: uploading backup ") for line in upload), upload
    archive_key = re.compile(
        rf"^{re.escape(url)}: uploading prod/kotomi/\S+/kotomi\.db\.zst: attempt (\d) of 3 "
        r"failed \(transient error: EndpointConnectionError\); attempt (\d) in \d+\.\d s$"
    )
    retries = [m.groups() for m in map(archive_key.match, upload) if m]
    assert retries == [("1", "2"), ("2", "3")], upload  # one line per retry, with its wait

    archive = step_lines(instance, result.run_id, "kotomi__archive")
    progress = [line for line in archive if line.startswith("archive of kotomi: ")]
    assert progress, archive
    assert all(re.search(r" MiB of \d+\.\d MiB \(\d+%\)$", line) for line in progress), progress
    # Sizes as people read them (the metadata keeps the byte counts).
    assert any(re.match(r"archive \S+: \d+\.\d MiB -> \d+\.\d [KM]iB \(zstd", x) for x in archive)
    snapshot = step_lines(instance, result.run_id, "kotomi__snapshot")
    assert any(re.match(r"snapshot \S+ \(copy\): \d+\.\d MiB in ", line) for line in snapshot)
