"""Schedules shared by every database: each tick asks for one run per database, skipping a
database while a run about it is in progress (backup, prune, drill or restore: they would
compete for the same files and disk). Their number does not grow with the databases."""

from collections.abc import Callable, Sequence
from datetime import timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    FreshnessPolicy,
    JobDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from .databases import DatabaseSpec, databases_of_run
from .options import KotomiBackupOptions

RUNNING = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
IN_PROGRESS = [DagsterRunStatus.QUEUED, *RUNNING]


def busy_databases(
    instance: DagsterInstance, exclude_run: str | None = None, *, queued: bool = True
) -> dict[str, str]:
    """{database: "run <id> (<job>)"} for every run in progress, whoever launched it.

    `queued=False` leaves out queued runs: a run that is already executing uses it, because
    the instance's queue holds a queued run of the same database until this one has finished.
    """
    busy: dict[str, str] = {}
    statuses = IN_PROGRESS if queued else RUNNING
    for record in instance.get_run_records(RunsFilter(statuses=statuses)):
        run = record.dagster_run
        if run.run_id == exclude_run:
            continue
        keys = [k.path for k in run.asset_selection or ()]
        keys += [k.asset_key.path for k in run.asset_check_selection or ()]
        pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
        for name in databases_of_run(run.tags, run.job_name, keys, run.run_config, pools or ()):
            busy.setdefault(name, f"run {run.run_id} ({run.job_name})")
    return busy


def per_database_schedule(
    options: KotomiBackupOptions,
    job: UnresolvedAssetJobDefinition | JobDefinition,
    *,
    name: str,
    cron: str,
    description: str,
    keys_of: Callable[[DatabaseSpec], Sequence[AssetKey]],
    running: bool = True,
    tags: dict[str, str] | None = None,
) -> ScheduleDefinition:
    timezone = options.cadence.timezone
    specs = options.databases

    @schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
        description=f"{description} ({cron} in {timezone}); one run per database.",
    )
    def _schedule(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        busy = busy_databases(context.instance)
        requests = []
        for spec in specs:
            if spec.name in busy:
                context.log.info(f"{spec.name} is busy: {busy[spec.name]} in progress; skipped")
                continue
            requests.append(
                RunRequest(
                    run_key=spec.name,
                    asset_selection=list(keys_of(spec)),
                    tags={**spec.tags, **(tags or {})},
                )
            )
        if not requests:
            detail = "; ".join(f"{n}: {what}" for n, what in sorted(busy.items())[:5])
            return SkipReason(f"every database is busy ({detail})")
        return requests

    return _schedule


def overdue_after(window: timedelta) -> FreshnessPolicy | None:
    """A freshness policy failing `window` after the newest materialization (0: none), so the
    UI shows what the health sensor alerts on."""
    if window.total_seconds() <= 0:
        return None
    return FreshnessPolicy.time_window(fail_window=window)
