"""The retention area: per database a prune asset, run after every successful upload (its
own run: a prune failure never marks the backup failed) and daily as a backstop."""

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    Definitions,
    EventLogEntry,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    asset_sensor,
    define_asset_job,
    in_process_executor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..databases import DatabaseSpec
from ..scheduling import database_schedule
from .assets import RETENTION_KEY, build_prune_asset
from .resources import retention_resource_from_env

DAILY_AT_3 = "0 3 * * *"


def _prune_after_upload(spec: DatabaseSpec, job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    @asset_sensor(
        name=f"{spec.key}_prune_after_upload",
        asset_key=AssetKey([spec.name, "upload"]),
        job=job,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Prune {spec.name}'s destinations after each successful upload.",
    )
    def prune_after_upload(
        context: SensorEvaluationContext, asset_event: EventLogEntry
    ) -> RunRequest:
        # One prune per upload run: the run key makes a re-evaluated event a no-op.
        return RunRequest(run_key=str(asset_event.run_id), tags=spec.tags)

    return prune_after_upload


def build_retention_definitions(specs: list[DatabaseSpec]) -> Definitions:
    assets, jobs, schedules, sensors = [], [], [], []
    for spec in specs:
        prune = build_prune_asset(spec)
        job = define_asset_job(
            f"{spec.key}_prune",
            selection=AssetSelection.assets(prune),
            executor_def=in_process_executor,
            tags=spec.tags,
        )

        prune_after_upload = _prune_after_upload(spec, job)
        assets.append(prune)
        jobs.append(job)
        sensors.append(prune_after_upload)
        schedules.append(
            database_schedule(
                spec,
                job,
                name=f"{spec.key}_daily_prune",
                cron=DAILY_AT_3,
                description=f"Prune {spec.name} daily (backstop)",
            )
        )
    return Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={RETENTION_KEY: retention_resource_from_env()},
    )
