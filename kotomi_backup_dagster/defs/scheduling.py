"""Schedules shared by every area: one run per database at a time, in the configured zone."""

import os

from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from .databases import DatabaseSpec

IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def configured_timezone() -> str:
    return os.environ.get("KOTOMI_BACKUP_TIMEZONE") or "UTC"


def database_schedule(
    spec: DatabaseSpec,
    job: UnresolvedAssetJobDefinition,
    *,
    name: str,
    cron: str,
    description: str,
    running: bool = True,
) -> ScheduleDefinition:
    """A schedule that skips its tick while any run about the same database is in progress
    (backup, prune, drill or restore: they would compete for the same files and disk)."""
    timezone = configured_timezone()

    @schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
        description=f"{description} ({cron} in {timezone}).",
    )
    def _schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        busy = context.instance.get_run_records(
            RunsFilter(tags=spec.tags, statuses=IN_PROGRESS), limit=1
        )
        if busy:
            run = busy[0].dagster_run
            return SkipReason(f"{spec.name} is busy: run {run.run_id} ({run.job_name}) in progress")
        return RunRequest(tags=spec.tags)

    return _schedule
