"""The restore area in Dagster: the restore job from config, the drill, the monthly test."""

import hashlib
import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, Definitions
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.layout import list_backups, list_drills
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import run_cli


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dest(dagster_env: Path) -> Path:
    return dagster_env


def defs() -> Definitions:
    return definitions_from_env()


def make_backups(db: Path, dest: Path, count: int) -> list[str]:
    settings = BackupSettings.from_env(db_path=db, urls=(str(dest),))
    return [run_backup(settings).manifest.backup_id for _ in range(count)]


def test_restore_job_from_config_gives_the_same_file_as_the_cli(
    dest: Path, kotomi_db: Path, tmp_path: Path
) -> None:
    first, _ = make_backups(kotomi_db, dest, 2)
    target = tmp_path / "restored-by-dagster.db"
    result = (
        defs()
        .resolve_job_def("restore_job")
        .execute_in_process(
            run_config={
                "ops": {
                    "choose_backup_to_restore": {
                        "config": {
                            "database": "kotomi",
                            "backup": first,
                            "target_path": str(target),
                        }
                    }
                }
            },
            instance=DagsterInstance.ephemeral(),
        )
    )
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert steps == {
        "choose_backup_to_restore",
        "fetch_backup_archive",
        "check_restored_copy",
        "swap_in_restored",
    }
    by_cli = tmp_path / "restored-by-cli.db"
    proc = run_cli("restore", first, "--db", str(by_cli), "--from", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sha256(target) == sha256(by_cli)
    manifest = next(
        m for m in list_backups(LocalStore(dest), "kotomi").backups if m.backup_id == first
    )
    assert sha256(target) == manifest.db_sha256


def origin_of(job_name: str) -> RemoteJobOrigin:
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)


def test_a_restore_waits_for_no_queued_run_but_refuses_beside_a_running_one(
    dest: Path, kotomi_db: Path, tmp_path: Path
) -> None:
    """A prune queued after the restore was launched waits in the queue behind it (the tag
    limit of one run per database); one already running would compete for the same files."""
    make_backups(kotomi_db, dest, 1)
    definitions = defs()
    restore = definitions.resolve_job_def("restore_job")
    prune = definitions.resolve_job_def("kotomi_prune")
    target = tmp_path / "restored.db"
    config = {
        "ops": {
            "choose_backup_to_restore": {
                "config": {"database": "kotomi", "backup": "latest", "target_path": str(target)}
            }
        }
    }
    tags = {"kotomi_backup/database": "kotomi"}
    with DagsterInstance.ephemeral() as instance:
        queued = create_run_for_test(
            instance,
            job_name=prune.name,
            status=DagsterRunStatus.QUEUED,
            tags=tags,
            remote_job_origin=origin_of(prune.name),  # a queued run names its code location
        )
        assert restore.execute_in_process(run_config=config, instance=instance).success
        assert target.exists()
        target.unlink()

        instance.delete_run(queued.run_id)
        running = instance.create_run_for_job(prune, status=DagsterRunStatus.STARTED, tags=tags)
        result = restore.execute_in_process(
            run_config=config, instance=instance, raise_on_error=False
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        error = failure.step_failure_data.error
        assert error and f"kotomi is busy: run {running.run_id} (kotomi_prune)" in error.message
        assert not target.exists()


def test_restore_launchpad_offers_the_configured_databases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", "blog=/data/blog.db,kotomi=/data/kotomi.db")
    job = defs().resolve_job_def("restore_job")
    field = job.run_config_schema.config_type.fields["ops"].config_type.fields[
        "choose_backup_to_restore"
    ]
    database = field.config_type.fields["config"].config_type.fields["database"]
    assert [v.config_value for v in database.config_type.enum_values] == ["blog", "kotomi"]
    assert database.default_value == "blog"
    # Anything else is refused before a run starts, naming the value.
    with pytest.raises(DagsterInvalidConfigError, match=r"not in enum type .* got docs"):
        job.execute_in_process(
            run_config={"ops": {"choose_backup_to_restore": {"config": {"database": "docs"}}}},
            instance=DagsterInstance.ephemeral(),
        )


def test_weekly_drill_checks_the_latest_backup_and_records_it(dest: Path, kotomi_db: Path) -> None:
    make_backups(kotomi_db, dest, 2)
    result = (
        defs()
        .resolve_job_def("kotomi_restore_drill")
        .execute_in_process(instance=DagsterInstance.ephemeral())
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "checksums",
        "integrity",
        "row_counts",
        "kotomi_queries",
    }
    assert all(e.passed for e in evaluations)
    mat = result.asset_materializations_for_node("kotomi__restore_drill")[0]
    assert mat.metadata["rto_seconds"].value > 0
    newest = list_backups(LocalStore(dest), "kotomi").backups[0]
    assert mat.metadata["backup_id"].value == newest.backup_id
    assert [d.ok for d in list_drills(LocalStore(dest), "kotomi", newest.backup_id)] == [True]


def test_each_drill_check_says_what_it_compared_and_on_which_backup(
    dest: Path, kotomi_db: Path
) -> None:
    [backup_id] = make_backups(kotomi_db, dest, 1)
    result = (
        defs()
        .resolve_job_def("kotomi_restore_drill")
        .execute_in_process(instance=DagsterInstance.ephemeral())
    )
    described = {e.check_name: e.description for e in result.get_asset_check_evaluations()}
    on = f" on 1 backup: {backup_id} at file://{dest}"  # was "passed on 1"
    assert described == {
        "checksums": f"the archive's and the restored database's sha256 equal the manifest's{on}",
        "integrity": f"integrity_check of the restored database returned exactly ok{on}",
        "row_counts": f"every table's row count equals the manifest's{on}",
        "kotomi_queries": f"Kotomi's read queries ran on the restored database{on}",
    }


def test_monthly_test_drills_the_backups_list_puts_in_a_tier_and_names_the_others(
    dest: Path, kotomi_db: Path
) -> None:
    make_backups(kotomi_db, dest, 3)  # one day: newest and oldest fill tiers, the middle none
    listed = json.loads(run_cli("list", "--json", env={"KOTOMI_BACKUP_URL": str(dest)}).stdout)
    backups = listed["destinations"][0]["backups"]
    in_a_tier = {b["backup_id"] for b in backups if b["tiers"]}
    [in_none] = [b["backup_id"] for b in backups if not b["tiers"]]
    instance = DagsterInstance.ephemeral()
    result = defs().resolve_job_def("kotomi_restore_test").execute_in_process(instance=instance)
    assert result.success
    drilled = {
        record.backup_id
        for backup_id in in_a_tier | {in_none}
        for record in list_drills(LocalStore(dest), "kotomi", backup_id)
    }
    assert drilled == in_a_tier  # was all three
    [mat] = result.asset_materializations_for_node("kotomi__restore_test")
    assert mat.metadata["drilled"].value == 2
    assert mat.metadata["not_retained_not_drilled"].value == 1
    report = str(mat.metadata["report"].value)
    assert f"| {in_none} |" in report and "in no retention tier" in report
    logged = [e.user_message for e in instance.all_logs(result.run_id) if in_none in e.user_message]
    assert any("in no retention tier not drilled" in line for line in logged), logged


def test_monthly_test_drills_every_one_of_30_backups_and_reports_the_bad_one(
    dest: Path, kotomi_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_KEEP_LAST", "30")  # every one retained
    ids = make_backups(kotomi_db, dest, 30)
    bad = ids[7]
    archive = dest / "kotomi" / bad / "kotomi.db.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x04
    archive.write_bytes(bytes(data))
    result = (
        defs()
        .resolve_job_def("kotomi_restore_test")
        .execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success  # a failed drill fails the run, so the failure alert fires
    # The asset itself failed (no green materialization beside red checks) ...
    assert not result.asset_materializations_for_node("kotomi__restore_test")
    [failure] = result.get_step_failure_events()
    # ... and the step's headline is the cause, with the figures in its metadata.
    data = failure.step_failure_data.user_failure_data
    assert data is not None and data.description is not None
    assert data.description.startswith(
        f"restore test of kotomi backup {bad} at file://{dest} failed: "
    )
    assert "\n" not in data.description
    meta = {k: v.value for k, v in data.metadata.items()}
    assert (meta["drilled"], meta["passed"], meta["failed"]) == (30, 29, 1)
    assert f"| {bad} |" in meta["report"] and "**FAILED**" in meta["report"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["checksums"] is False
    for backup_id in ids:
        drills = list_drills(LocalStore(dest), "kotomi", backup_id)
        assert [d.ok for d in drills] == [backup_id != bad]
