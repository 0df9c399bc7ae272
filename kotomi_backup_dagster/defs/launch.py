"""Run one job of this code location here, in this process, as the UI's "Launch" makes it.

`make demo` runs the backup job once before any Dagster process is up. `dg launch` executes
it as a bare job: the run names no code location, so the job's page in the UI lists no run
and "Re-execute" warns that it "loaded from a different code location", and it carries none
of the tags the run queue adds. Here the run is created from the code location as `dg dev`
serves it (`kotomi_backup`, pyproject's `code_location_name`): its origin and snapshot are
the ones the UI loads, and it carries the database tag `DatabaseRunCoordinator` gives a run
when it is queued. Then it executes here, to its end, without the daemon's queue.

    python -m kotomi_backup_dagster.defs.launch kotomi_backup
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from ..engine import config
from .run_coordinator import database_tag_for

# The code location `dg dev` serves (pyproject.toml: [tool.dg.project]), and its module.
LOCATION_NAME = "kotomi_backup"
DEFINITIONS_MODULE = "kotomi_backup_dagster.definitions"


def launch_here(job_name: str, instance: DagsterInstance) -> DagsterRun:
    """Create `job_name`'s run as the UI would (origin, snapshot, the queue's tags) and
    execute it in this process; the finished run is returned, failed or not."""
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=os.getcwd(),
        ),
        location_name=LOCATION_NAME,
    )
    with origin.create_location(instance) as location:
        remote_job = location.get_repository(SINGLETON_REPOSITORY_NAME).get_full_job(job_name)
        job = location.get_reconstructable_job(SINGLETON_REPOSITORY_NAME, job_name)
        run = instance.create_run_for_job(
            job.get_definition(),
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
    tags = database_tag_for(run)  # what the queue adds to a run launched from the UI
    if tags:
        instance.add_run_tags(run.run_id, tags)
        run = instance.get_run_by_id(run.run_id) or run
    execute_run(job, run, instance)
    return instance.get_run_by_id(run.run_id) or run


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m kotomi_backup_dagster.defs.launch JOB\n")
        return 2
    with DagsterInstance.get() as instance:
        run = launch_here(args[0], instance)
    ok = run.status == DagsterRunStatus.SUCCESS
    page = f"{config.WEBSERVER_URL.read().rstrip('/')}/runs/{run.run_id}"
    sys.stdout.write(f"run {run.run_id} of {run.job_name}: {run.status.value.lower()} ({page})\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
