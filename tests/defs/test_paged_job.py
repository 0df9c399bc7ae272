"""The backup job with KOTOMI_BACKUP_FORMAT=paged, executed in-process: the stages, the
upload's page counts, an incremental second run, and re-execution after a failed upload."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)

from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.manifest import PAGED_FORMAT, Manifest
from kotomi_backup_dagster.engine.restore import choose_backup, fetch_backup
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import kotomi_requests

STEPS = {"kotomi__snapshot", "kotomi__snapshot_verify", "kotomi__archive", "kotomi__upload"}


def paged_backup_job() -> JobDefinition:
    """Module-level, so Dagster can reconstruct the job for re-execution."""
    return definitions_from_env().resolve_job_def("kotomi_backup")


@pytest.fixture
def env(dagster_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Dagster environment of the backup job tests, in the paged format."""
    monkeypatch.setenv("KOTOMI_BACKUP_FORMAT", "paged")
    return dagster_env


def step_keys(result: Any, kind: str) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == kind}


def metadata(result: Any) -> dict[str, dict[str, Any]]:
    """{asset name: {metadata key: plain value}} of the run's materializations."""
    found: dict[str, dict[str, Any]] = {}
    for node in ("kotomi__snapshot", "kotomi__archive", "kotomi__upload"):
        for mat in result.asset_materializations_for_node(node):
            found[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    return found


def restored_sha256(dest: Path, manifest: Manifest, tmp_path: Path) -> str:
    chosen = choose_backup([LocalStore(dest)], "kotomi", manifest.backup_id)
    assert chosen.manifest == manifest
    path = fetch_backup(chosen, tmp_path / "restored" / f"{manifest.backup_id}.db")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_paged_job_materializes_each_stage_and_a_second_run_stores_few_pages(
    env: Path, kotomi_db: Path, tmp_path: Path
) -> None:
    job = paged_backup_job()
    first = job.execute_in_process(instance=DagsterInstance.ephemeral())
    assert first.success
    assert step_keys(first, "STEP_SUCCESS") == STEPS
    mats = metadata(first)
    assert set(mats) == {"snapshot", "archive", "upload"}
    assert mats["snapshot"]["method"] == "copy"  # nothing cached yet to build on
    assert mats["archive"]["format"] == "paged" and "bytes_out" not in mats["archive"]
    upload = mats["upload"]
    page_count = mats["snapshot"]["page_count"]
    assert upload["format"] == "paged" and upload["destinations_ok"] == 1
    assert upload["new_pages"] > 0.9 * page_count  # the first backup stores every page
    assert upload["new_pages"] + upload["reused_pages"] == page_count
    [one] = list_backups(LocalStore(env), "kotomi").backups
    assert one.format == PAGED_FORMAT and one.backup_id == mats["snapshot"]["backup_id"]
    assert one.paged is not None and one.paged["new_pages"] == upload["new_pages"]
    assert not Path(mats["snapshot"]["staging"]).exists()

    kotomi_requests(kotomi_db, 30, seed=1)
    second = job.execute_in_process(instance=DagsterInstance.ephemeral())
    assert second.success
    again = metadata(second)
    page_count = again["snapshot"]["page_count"]
    assert again["snapshot"]["method"] == "live read"
    assert again["upload"]["format"] == "paged"
    assert again["upload"]["new_pages"] < page_count / 5, (again["upload"], page_count)
    assert again["upload"]["bytes_uploaded"] < upload["bytes_uploaded"] / 3
    two, older = list_backups(LocalStore(env), "kotomi").backups
    assert older == one and two.backup_id == again["snapshot"]["backup_id"]
    assert two.paged is not None and two.paged["base"] == one.backup_id
    assert two.paged["new_pages"] == again["upload"]["new_pages"]
    for manifest in (one, two):
        assert restored_sha256(env, manifest, tmp_path) == manifest.db_sha256


def test_reexecution_after_a_failed_paged_upload_reruns_only_the_upload(
    env: Path, kotomi_db: Path, tmp_path: Path
) -> None:
    job = reconstructable(paged_backup_job)
    # An ephemeral instance re-executes from failure as a persistent one does (the staged
    # backup passes through the filesystem IO manager), in a fraction of the time.
    with DagsterInstance.ephemeral() as instance:
        assert paged_backup_job().execute_in_process(instance=instance).success
        [one] = list_backups(LocalStore(env), "kotomi").backups

        kotomi_requests(kotomi_db, 30, seed=2)
        packs = env / "kotomi" / "packs"
        aside = env / "packs-aside"
        packs.rename(aside)
        packs.write_text("a file where the packs folder should be")  # the store breaks
        failed = execute_job(job, instance=instance, raise_on_error=False)
        assert not failed.success
        assert step_keys(failed, "STEP_FAILURE") == {"kotomi__upload"}
        [failure] = failed.get_step_failure_events()
        user_failure = failure.step_failure_data.user_failure_data
        described = str(user_failure.description if user_failure else "")
        assert "\n" not in described and f"upload of kotomi to file://{env} failed" in described
        assert list_backups(LocalStore(env), "kotomi").backups == [one]
        snap = failed.asset_materializations_for_node("kotomi__snapshot")[0].metadata
        staging = Path(str(snap["staging"].value))
        assert staging.exists(), "the staged pages are gone: re-execution cannot work"
        # Read in place: only the changed pages were staged, and they are all the upload needs.
        assert snap["method"].value == "live read"
        assert not (staging / "kotomi.db").exists() and (staging / "pages.delta").exists()

        packs.unlink()
        aside.rename(packs)  # the destination is back
        options = ReexecutionOptions.from_failure(failed.run_id, instance)
        second = execute_job(job, instance=instance, reexecution_options=options)
        assert second.success
        assert step_keys(second, "STEP_START") == {"kotomi__upload"}
        upload = metadata(second)["upload"]

    two, older = list_backups(LocalStore(env), "kotomi").backups
    assert older == one and two.backup_id == snap["backup_id"].value
    assert two.paged is not None and two.paged["base"] == one.backup_id
    assert upload["format"] == "paged" and upload["new_pages"] == two.paged["new_pages"]
    assert two.paged["new_pages"] < two.page_count / 5
    assert not staging.exists(), "staging kept after the upload landed"
    for manifest in (one, two):
        assert restored_sha256(env, manifest, tmp_path) == manifest.db_sha256
