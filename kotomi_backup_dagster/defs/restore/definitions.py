"""The restore area: weekly drill and monthly test per database, and the restore job."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from ..databases import DatabaseSpec
from ..scheduling import database_schedule
from .assets import build_restore_assets
from .restore_job import build_restore_job

WEEKLY_SUNDAY_4 = "0 4 * * 0"
MONTHLY_FIRST_5 = "0 5 1 * *"


def build_restore_definitions(specs: list[DatabaseSpec]) -> Definitions:
    assets, jobs, schedules = [], [], []
    for spec in specs:
        drill, test = build_restore_assets(spec)
        drill_job = define_asset_job(
            f"{spec.key}_restore_drill",
            selection=AssetSelection.assets(drill),
            executor_def=in_process_executor,
            tags=spec.tags,
        )
        test_job = define_asset_job(
            f"{spec.key}_restore_test",
            selection=AssetSelection.assets(test),
            executor_def=in_process_executor,
            tags=spec.tags,
        )
        assets += [drill, test]
        jobs += [drill_job, test_job]
        schedules += [
            database_schedule(
                spec,
                drill_job,
                name=f"{spec.key}_weekly_restore_drill",
                cron=WEEKLY_SUNDAY_4,
                description=f"Drill {spec.name}'s latest backup",
            ),
            database_schedule(
                spec,
                test_job,
                name=f"{spec.key}_monthly_restore_test",
                cron=MONTHLY_FIRST_5,
                description=f"Drill every backup of {spec.name}",
            ),
        ]
    return Definitions(assets=assets, jobs=[*jobs, build_restore_job(specs)], schedules=schedules)
