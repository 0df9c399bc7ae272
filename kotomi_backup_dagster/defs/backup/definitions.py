"""The backup area: per database, its assets, the job that runs them, and its schedule."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from ..databases import DatabaseSpec
from ..scheduling import database_schedule
from .assets import build_backup_assets
from .resources import backup_resource_from_env

DAILY_AT_2 = "0 2 * * *"


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
    daily = database_schedule(
        spec,
        job,
        name=f"{spec.key}_daily_backup",
        cron=DAILY_AT_2,
        description=f"Back up {spec.name} every day at 02:00",
    )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job],
        schedules=[daily],
        resources={spec.resource_key: backup_resource_from_env(spec)},
    )
