"""The backup area: per database, its assets, the job that runs them, and its schedule."""

import os

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from ..databases import DatabaseSpec
from ..retention.resources import keep_hourly_from_env
from ..scheduling import database_schedule
from .assets import build_backup_assets, staged_io_key
from .resources import backup_resource_from_env
from .staged_io import RunScopedIOManager

DAILY_AT_2 = "0 2 * * *"
HOURLY = "0 * * * *"


def backup_job_name(spec: DatabaseSpec) -> str:
    return f"{spec.key}_backup"


def build_backup_definitions(spec: DatabaseSpec) -> Definitions:
    assets, checks = build_backup_assets(spec, spec.resource_key)
    job = define_asset_job(
        backup_job_name(spec),
        selection=AssetSelection.assets(*assets),
        executor_def=in_process_executor,  # ~5 s instead of ~12 s per run; stages are sequential
        tags=spec.tags,  # the run queue allows one run per database (dagster.yaml)
        description=f"Back up {spec.name}: snapshot, verify, compress (+encrypt), upload.",
    )
    # The cadence follows the policy: hourly backups when hourly tiers are kept (a count, or
    # -1: unlimited), else daily.
    hourly_on = keep_hourly_from_env() != 0
    schedules = [
        database_schedule(
            spec,
            job,
            name=f"{spec.key}_daily_backup",
            cron=os.environ.get("KOTOMI_BACKUP_CRON") or DAILY_AT_2,
            description=f"Back up {spec.name} (KOTOMI_BACKUP_CRON, default daily at 02:00)",
            running=not hourly_on,
        ),
        database_schedule(
            spec,
            job,
            name=f"{spec.key}_hourly_backup",
            cron=HOURLY,
            description=f"Back up {spec.name} hourly (on unless KOTOMI_BACKUP_KEEP_HOURLY is 0)",
            running=hourly_on,
        ),
    ]
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job],
        schedules=schedules,
        resources={
            spec.resource_key: backup_resource_from_env(spec),
            staged_io_key(spec.resource_key): RunScopedIOManager(),
        },
    )
