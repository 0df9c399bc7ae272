"""The restore area in Dagster: the restore job from config (and what it may write), the drill,
the monthly test."""

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, Definitions, HookContext, success_hook
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
from tests.conftest import run_cli, run_job


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
    target = kotomi_db.parent / "restored-by-dagster.db"  # a new file beside the database
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
    target = kotomi_db.parent / "restored.db"
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


# --- what the Launchpad may write -----------------------------------------------------------


def restore_config(**config: object) -> dict[str, object]:
    return {"ops": {"choose_backup_to_restore": {"config": {"database": "kotomi", **config}}}}


def failed_step(result: Any) -> tuple[str, str]:
    """(the failed step, its headline) of a failed run."""
    assert not result.success
    [failure] = result.get_step_failure_events()
    data = failure.step_failure_data.user_failure_data
    assert data is not None and data.description is not None
    assert "\n" not in data.description
    return failure.step_key, data.description


@pytest.fixture
def place(dest: Path, kotomi_db: Path, tmp_path: Path) -> Path:
    """A backup of data/kotomi.db, and other/ with a text file and another database."""
    make_backups(kotomi_db, dest, 1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("my notes, not a database\n")
    shutil.copyfile(kotomi_db, other / "other.db")
    return tmp_path


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("this machine does not let the tests make a device")


LAUNCHPAD_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "a text file in another folder": (
        lambda root: str(root / "other" / "notes.txt"),
        "is outside kotomi's folder",
    ),
    "a new file in another folder": (
        lambda root: str(root / "other" / "new.db"),
        "is outside kotomi's folder",
    ),
    "a text file beside the database": (
        lambda root: _write(root / "data" / "notes.txt", "beside it\n"),
        "it is not a SQLite database",
    ),
    "a symlink beside it to a text file elsewhere": (
        lambda root: _symlink(root / "data" / "link.db", root / "other" / "notes.txt"),
        "it is a symlink",
    ),
    "a symlink beside it to /dev/null": (
        lambda root: _symlink(root / "data" / "null.db", Path("/dev/null")),
        "it is a symlink",
    ),
    "a device beside it": (
        lambda root: _made(root / "data" / "null.db", _device),
        "it is a device",
    ),
    "a FIFO beside it": (
        lambda root: _made(root / "data" / "fifo.db", os.mkfifo),
        "it is a FIFO",
    ),
    "another database beside it": (
        lambda root: _copy(root / "other" / "other.db", root / "data" / "docs.db"),
        "exists and is not kotomi's database",
    ),
    "a hard link beside it to another database": (
        lambda root: _hard_link(root / "other" / "other.db", root / "data" / "hard.db"),
        "has 2 names (hard links)",
    ),
    "a symlinked folder beside it": (
        lambda root: str(_symlink(root / "data" / "elsewhere", root / "other") + "/new.db"),
        "is outside kotomi's folder",
    ),
    "'..' out of its folder": (
        lambda root: str(root / "data" / ".." / "other" / "new.db"),
        "is outside kotomi's folder",
    ),
    "the database's -wal name": (
        lambda root: str(root / "data" / "kotomi.db-wal"),
        "it is the -wal file of",
    ),
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _symlink(path: Path, to: Path) -> str:
    path.symlink_to(to)
    return str(path)


def _made(path: Path, make: Callable[[Path], object]) -> str:
    make(path)
    return str(path)


def _copy(src: Path, dst: Path) -> str:
    shutil.copyfile(src, dst)
    return str(dst)


def _hard_link(src: Path, dst: Path) -> str:
    os.link(src, dst)
    return str(dst)


def entries(*folders: Path) -> dict[str, tuple[object, ...]]:
    """Every entry of `folders` as it is (a file's inode and bytes, a link's target)."""
    seen: dict[str, tuple[object, ...]] = {}
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            st = entry.lstat()
            if stat.S_ISLNK(st.st_mode):
                seen[str(entry)] = ("link", os.readlink(entry))
            elif stat.S_ISREG(st.st_mode):
                seen[str(entry)] = ("file", st.st_ino, entry.read_bytes())
            else:
                seen[str(entry)] = (stat.S_IFMT(st.st_mode), st.st_ino)
    return seen


@pytest.mark.parametrize("case", LAUNCHPAD_CASES)
def test_the_launchpad_writes_only_the_database_or_a_new_file_beside_it(
    place: Path, case: str
) -> None:
    make, expected = LAUNCHPAD_CASES[case]
    target = make(place)
    before = entries(place / "data", place / "other")
    result = run_job(
        "restore_job", run_config=restore_config(target_path=target, force=True, keep_copy=False)
    )
    step, line = failed_step(result)
    assert step == "choose_backup_to_restore"  # before anything is downloaded
    assert line.startswith("restore of kotomi: ") and expected in line, line
    assert entries(place / "data", place / "other") == before


def test_replacing_the_live_database_needs_its_name_repeated(
    place: Path, kotomi_db: Path, dest: Path
) -> None:
    before = entries(place / "data")
    for confirm in ("", "yes", "blog"):
        step, line = failed_step(run_job("restore_job", run_config=restore_config(confirm=confirm)))
        assert step == "choose_backup_to_restore"
        assert f"{kotomi_db} is kotomi's live database: to replace it, set confirm: kotomi" in line
        assert entries(place / "data") == before
    newest = list_backups(LocalStore(dest), "kotomi").backups[0]
    for confirm in ("kotomi", str(kotomi_db)):
        result = run_job("restore_job", run_config=restore_config(confirm=confirm))
        assert result.success
        assert sha256(kotomi_db) == newest.db_sha256
    assert len(list(kotomi_db.parent.glob("kotomi.db.before-restore-*"))) == 2


def test_the_launchpads_default_config_with_a_new_name_restores_beside_the_database(
    place: Path, kotomi_db: Path, dest: Path
) -> None:
    """Only `target_path` changed from what the Launchpad fills in (its own YAML, resources
    included): a bare name is a new file in the database's folder, and needs no confirm."""
    live = sha256(kotomi_db)
    filled = launchpad_yaml(defs().resolve_job_def("restore_job"))
    filled["ops"]["choose_backup_to_restore"]["config"]["target_path"] = "restored.db"
    result = run_job("restore_job", run_config=filled)
    assert result.success
    newest = list_backups(LocalStore(dest), "kotomi").backups[0]
    assert sha256(kotomi_db.parent / "restored.db") == newest.db_sha256
    assert sha256(kotomi_db) == live
    # Again: the file now exists, and the Launchpad replaces nothing but the database.
    _, line = failed_step(
        run_job("restore_job", run_config=restore_config(target_path="restored.db"))
    )
    assert "exists and is not kotomi's database" in line


def test_the_restore_dir_setting_allows_new_files_in_one_more_folder(
    place: Path, kotomi_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restores = place / "restores"
    restores.mkdir()
    monkeypatch.setenv("KOTOMI_BACKUP_RESTORE_DIR", str(restores))
    assert run_job("restore_job", run_config=restore_config(target_path=str(restores / "a.db")))
    assert (restores / "a.db").read_bytes()[:16] == b"SQLite format 3\x00"
    before = entries(restores, place / "other")
    for target, expected in (
        (restores / "a.db", "exists and is not kotomi's database"),
        (place / "other" / "new.db", f"and KOTOMI_BACKUP_RESTORE_DIR ({restores})"),
    ):
        _, line = failed_step(
            run_job("restore_job", run_config=restore_config(target_path=str(target)))
        )
        assert expected in line, line
    assert entries(restores, place / "other") == before


@pytest.mark.parametrize("meanwhile", ["a text file at the new name", "a symlink for the db"])
def test_a_target_changed_after_the_backup_was_chosen_is_not_replaced(
    place: Path, kotomi_db: Path, meanwhile: str
) -> None:
    """The swap checks the target again. Here it changes after the restored copy is checked
    (a hook of that step), as another process could change it between the Launchpad's click
    and the swap; the swap step changes nothing of what it then finds."""
    new = kotomi_db.parent / "new.db"
    before: dict[str, tuple[object, ...]] = {}

    @success_hook
    def change_the_target(context: HookContext) -> None:
        if context.op.name != "check_restored_copy":
            return
        if meanwhile == "a text file at the new name":
            new.write_text("written meanwhile\n")
        else:
            kotomi_db.rename(kotomi_db.with_name("moved.db"))
            kotomi_db.symlink_to(place / "other" / "notes.txt")
        before.update(entries(place / "data", place / "other"))

    config = (
        restore_config(target_path=str(new))
        if meanwhile == "a text file at the new name"
        else restore_config(confirm="kotomi", force=True, keep_copy=False)
    )
    job = defs().resolve_job_def("restore_job").with_hooks({change_the_target})
    result = job.execute_in_process(
        run_config=config, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    step, line = failed_step(result)
    assert step == "swap_in_restored"
    expected = "it is not a SQLite database" if meanwhile.startswith("a text") else "a symlink"
    assert expected in line, line
    assert before and entries(place / "data", place / "other") == before


def test_a_wrong_backup_id_names_the_newest_ids_that_exist(dest: Path, kotomi_db: Path) -> None:
    ids = make_backups(kotomi_db, dest, 4)
    config = restore_config(backup="20261127T020000Z-abc123", target_path="new.db")
    _, line = failed_step(run_job("restore_job", run_config=config))
    newest = sorted(ids, reverse=True)[:3]
    assert f"(the newest there: {', '.join(newest)})" in line, line
    assert "`kotomi-backup list` shows every backup" in line
    assert not (kotomi_db.parent / "new.db").exists()


def launchpad_yaml(job: Any) -> Any:
    """What the Launchpad fills in: the UI's own default YAML of the job's config schema."""
    from dagster._core.snap import JobSnap
    from dagster_graphql.schema.run_config import default_values_yaml_from_type_snap

    snap = JobSnap.from_job_def(job)
    schema = snap.config_schema_snapshot
    root = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)
    return yaml.safe_load(default_values_yaml_from_type_snap(schema, root))


def test_the_launchpad_says_which_database_it_restores_and_asks_for_a_confirm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", "blog=/data/blog.db,docs=/srv/docs.db")
    job = defs().resolve_job_def("restore_job")
    filled = launchpad_yaml(job)
    op = filled["ops"]["choose_backup_to_restore"]["config"]
    assert (op["database"], op["target_path"], op["confirm"]) == ("blog", "", "")
    # No database's name in the shared settings: the run's `database` alone says which.
    resource = filled["resources"]["kotomi_backup_settings"]["config"]
    assert "name" not in resource and "db_path" not in resource
    field = job.run_config_schema.config_type.fields["ops"].config_type.fields[
        "choose_backup_to_restore"
    ]
    database = field.config_type.fields["config"].config_type.fields["database"]
    assert "blog (/data/blog.db), docs (/srv/docs.db)" in database.description
