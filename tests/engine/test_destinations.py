"""One destination that cannot be reached does not stop the work at the others: list, prune
and drill (CLI and Dagster) still do it where they can, say which destination failed and
why in one line each, and fail (the operator must hear of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import instance_for_test

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.layout import latest_drill, list_backups
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import run_cli, run_job

# Nothing listens on the discard port: every request to it is refused at once.
REFUSED = "http://127.0.0.1:9"
UNREACHABLE = "s3://kotomi-backups/site"
S3_CLIENT = {
    "AWS_ENDPOINT_URL": REFUSED,
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "KOTOMI_BACKUP_RETRIES": "0",
}


@pytest.fixture
def reachable(kotomi_db: Path, tmp_path: Path) -> Path:
    """A local destination holding two backups of the demo database."""
    dest = tmp_path / "backups"
    for _ in range(2):
        run_backup(BackupSettings.from_env(db_path=kotomi_db, urls=(str(dest),)))
    return dest


def both(dest: Path) -> dict[str, str]:
    """The local destination first, then one that refuses every connection."""
    return {**S3_CLIENT, "KOTOMI_BACKUP_URL": f"{dest},{UNREACHABLE}"}


def test_list_shows_the_reachable_destination_and_names_the_other(reachable: Path) -> None:
    listed = run_cli("list", "--json", env=both(reachable))
    assert listed.returncode == 1, listed.stderr
    report = json.loads(listed.stdout)["destinations"]
    assert [len(d["backups"]) for d in report] == [2, 0]
    assert "error" not in report[0] and report[1]["url"] == UNREACHABLE
    [line] = listed.stderr.strip().splitlines()
    assert line.startswith(f"kotomi-backup: error: cannot list {UNREACHABLE}: "), line


def test_prune_prunes_the_reachable_destination(reachable: Path) -> None:
    env = {**both(reachable), "KOTOMI_BACKUP_KEEP_LAST": "1", "KOTOMI_BACKUP_KEEP_DAILY": "0"}
    env |= {"KOTOMI_BACKUP_KEEP_HOURLY": "0", "KOTOMI_BACKUP_KEEP_WEEKLY": "0"}
    env |= {"KOTOMI_BACKUP_KEEP_MONTHLY": "0", "KOTOMI_BACKUP_KEEP_YEARLY": "0"}
    before = list_backups(LocalStore(reachable), "kotomi").backups
    pruned = run_cli("prune", "--json", env=env)
    assert pruned.returncode == 1, pruned.stderr
    report = json.loads(pruned.stdout)
    assert [d["url"] for d in report["destinations"]] == [f"file://{reachable}"]
    assert [e.split(": ")[0] for e in report["errors"]] == [UNREACHABLE]
    assert list_backups(LocalStore(reachable), "kotomi").backups == before[:1]  # newest kept
    assert pruned.stderr.strip().startswith(f"kotomi-backup: error: prune failed at {UNREACHABLE}")


def test_drill_drills_the_reachable_destination(reachable: Path) -> None:
    drilled = run_cli("drill", "--json", env=both(reachable))
    assert drilled.returncode == 1, drilled.stderr
    report = json.loads(drilled.stdout)
    [record] = report["drills"]
    assert record["ok"] is True and record["url"] == str(reachable)  # as configured
    assert [e.split(": ")[0] for e in report["errors"]] == [UNREACHABLE]
    assert latest_drill(LocalStore(reachable), "kotomi", record["backup_id"]) is not None
    [line] = drilled.stderr.strip().splitlines()
    assert line.startswith(f"kotomi-backup: error: drill not run at {UNREACHABLE}: "), line


def test_a_bad_destination_url_is_a_usage_error_even_beside_a_good_one(reachable: Path) -> None:
    listed = run_cli("list", env={"KOTOMI_BACKUP_URL": f"{reachable},ftp://example.test/b"})
    assert listed.returncode == 2, listed.stderr
    assert "ftp" in listed.stderr and "Traceback" not in listed.stderr


def test_dagster_drill_drills_the_reachable_destination_and_fails_naming_the_other(
    dagster_env: Path, kotomi_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_backup(BackupSettings.from_env(db_path=kotomi_db, urls=(str(dagster_env),)))
    for name, value in both(dagster_env).items():
        monkeypatch.setenv(name, value)
    with instance_for_test() as instance:
        result = run_job("kotomi_restore_drill", instance)
    assert not result.success
    # The reachable destination's backup was drilled, and its checks passed.
    [manifest] = list_backups(LocalStore(dagster_env), "kotomi").backups
    record = latest_drill(LocalStore(dagster_env), "kotomi", manifest.backup_id)
    assert record is not None and record.ok
    assert all(e.passed for e in result.get_asset_check_evaluations())
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    headline = str(error.message).splitlines()[0]
    assert f"drill of kotomi not run at {UNREACHABLE}: " in headline, headline


@pytest.mark.parametrize(
    ("error", "url", "first_words"),
    [
        (  # GCS's preflight names "permissions" in what it was doing: still a network question
            "gs://b/p: checking permissions failed after 1 attempts (could not connect to the "
            "endpoint http://127.0.0.1:9)",
            "gs://b/p",
            "check that the destination is reachable from this machine (the network, the "
            "endpoint in STORAGE_EMULATOR_HOST,",
        ),
        (
            "s3://b/p: uploading p/x failed after 6 attempts (connection closed)",
            "s3://b/p",
            "check that the destination is reachable from this machine (the network, the "
            "endpoint in AWS_ENDPOINT_URL,",
        ),
        (
            "destination s3://b/p: access denied; check the credentials and the bucket policy "
            "(AccessDenied, while uploading p/x)",
            "s3://b/p",
            "check the credentials",
        ),
    ],
)
def test_what_to_check_follows_the_cause_not_the_words_of_the_request(
    error: str, url: str, first_words: str
) -> None:
    from kotomi_backup_dagster.engine.destinations import what_to_check

    check = what_to_check(error, url)
    assert check is not None and check.startswith(first_words), check
