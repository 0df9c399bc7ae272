"""Dagster's own storage, kept bounded: runs of this code location's jobs that finished more
than `KotomiBackupOptions.run_history_days` ago (KOTOMI_BACKUP_RUN_HISTORY_DAYS, default 30;
0 keeps every run) are deleted with their events.

A backup every 15 minutes is about 120 runs a day with the prunes (bench/dagster_cost.py
measures the events and bytes of one); without this, Dagster's run storage grows without end.
It is a sensor that starts no run: each hourly tick deletes up to `BATCH` old runs. The newest
finished run of each job is never deleted, so an asset keeps its last materialization (and
its freshness says "stale", not "never") however long backups stopped. What a backup is lives
on the stores, never only in Dagster's history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRecord,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

HISTORY_SENSOR = "kotomi_run_history_cleanup"
BATCH = 200  # runs deleted per tick at most: a tick stays well inside the sensor timeout
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # the UI's "Materialize" runs, of every code location


def build_history_sensor(job_names: list[str], databases: set[str], days: int) -> SensorDefinition:
    """`databases`: the names whose assets make a "Materialize" run this location's."""

    def ours(record: RunRecord) -> bool:
        run = record.dagster_run
        if run.job_name != IMPLICIT_ASSET_JOB:
            return True
        keys = [k.path for k in run.asset_selection or ()]
        keys += [k.asset_key.path for k in run.asset_check_selection or ()]
        return bool(keys) and all(k[0] in databases for k in keys)

    @sensor(
        name=HISTORY_SENSOR,
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Delete this code location's runs (and their events) older than {days} days, "
            "keeping each job's newest (KOTOMI_BACKUP_RUN_HISTORY_DAYS; 0 keeps all)."
        ),
    )
    def run_history_cleanup(context: SensorEvaluationContext) -> SkipReason:
        if days <= 0:
            return SkipReason("every run is kept (KOTOMI_BACKUP_RUN_HISTORY_DAYS is 0)")
        cutoff = datetime.now(UTC) - timedelta(days=days)
        instance = context.instance
        deleted = 0
        for job in [*job_names, IMPLICIT_ASSET_JOB]:
            newest = instance.get_run_records(RunsFilter(job_name=job, statuses=FINISHED), limit=1)
            keep = {r.dagster_run.run_id for r in newest}
            old = instance.get_run_records(
                RunsFilter(job_name=job, statuses=FINISHED, updated_before=cutoff),
                limit=BATCH - deleted,
            )
            for record in old:
                if record.dagster_run.run_id not in keep and ours(record):
                    instance.delete_run(record.dagster_run.run_id)
                    deleted += 1
            if deleted >= BATCH:
                break
        return SkipReason(
            f"deleted {deleted} run(s) that finished before {cutoff:%Y-%m-%d %H:%M} UTC"
        )

    return run_history_cleanup
