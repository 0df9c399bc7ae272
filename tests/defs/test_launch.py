"""`make demo`'s run belongs to the code location `make dev` serves, as a run launched from the
UI does: the job's page lists it, "Re-execute" finds its job (origin and snapshot), and it
carries the database tag the run queue adds."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from kotomi_backup_dagster.defs.databases import DATABASE_TAG
from kotomi_backup_dagster.defs.factory import definitions_from_env
from tests.conftest import REPO, cli_env


@pytest.mark.slow
def test_make_demo_runs_the_backup_as_a_ui_launch_of_the_code_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = tmp_path / "demo"
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "demo", f"DEMO={demo}"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    location = project["code_location_name"]  # what `dg dev` serves
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(demo / "dagster_home"))) as instance:
        [run] = instance.get_runs()
        job_page = instance.get_runs(  # the UI's query for the job's runs
            RunsFilter(
                job_name="kotomi_backup",
                tags={REPOSITORY_LABEL_TAG: f"__repository__@{location}"},
            )
        )
    assert run.status == DagsterRunStatus.SUCCESS
    assert run.remote_job_origin is not None, "dg launch: a run of no code location"
    assert run.remote_job_origin.location_name == location
    assert [r.run_id for r in job_page] == [run.run_id]
    assert run.tags.get(DATABASE_TAG) == "kotomi"
    for name, value in {
        "KOTOMI_DB_PATH": demo / "kotomi.db",
        "KOTOMI_BACKUP_URL": demo / "backups",
        "KOTOMI_BACKUP_STAGING_DIR": demo / "staging",
    }.items():
        monkeypatch.setenv(name, str(value))
    served = definitions_from_env().resolve_job_def("kotomi_backup").get_job_snapshot_id()
    assert run.job_snapshot_id == served  # "Re-execute" runs the job it ran
