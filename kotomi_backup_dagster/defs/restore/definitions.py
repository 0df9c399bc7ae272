"""The restore area: the weekly drill and monthly test of every database (one job and one
schedule each, a run per database: the keeper's), and the restore job (the writer's: it
replaces the database on Kotomi's host)."""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, Definitions, define_asset_job

from ..databases import DatabaseSpec
from ..options import KotomiBackupOptions
from ..scheduling import per_database_schedule
from .assets import build_all_restore_assets
from .restore_job import build_restore_job

DRILL_JOB = "kotomi_restore_drill"
TEST_JOB = "kotomi_restore_test"


def build_restore_definitions(options: KotomiBackupOptions) -> Definitions:
    drills, tests = build_all_restore_assets(options)
    drill_job = define_asset_job(
        DRILL_JOB,
        selection=AssetSelection.assets(*drills),
        tags={"kotomi_backup/area": "restore"},
        description=(
            "Restore drill: restore the latest backup of each destination into scratch space "
            "and check it. A scheduled run drills one database; launched here, every database."
        ),
    )
    test_job = define_asset_job(
        TEST_JOB,
        selection=AssetSelection.assets(*tests),
        tags={"kotomi_backup/area": "restore"},
        description=(
            "Restore test: drill every retained backup of each destination. A scheduled run "
            "tests one database; launched here, every database."
        ),
    )

    restore = [build_restore_job(options)] if options.writes else []
    if not options.keeps:
        return Definitions(jobs=restore)

    def drill_keys(spec: DatabaseSpec) -> list[AssetKey]:
        return [AssetKey([spec.name, "restore_drill"])]

    def test_keys(spec: DatabaseSpec) -> list[AssetKey]:
        return [AssetKey([spec.name, "restore_test"])]

    return Definitions(
        assets=[*drills, *tests],
        jobs=[drill_job, test_job, *restore],
        schedules=[
            per_database_schedule(
                options,
                drill_job,
                name="kotomi_weekly_restore_drill",
                cron=options.cadence.drill,
                description="Drill the latest backup of every database",
                keys_of=drill_keys,
            ),
            per_database_schedule(
                options,
                test_job,
                name="kotomi_monthly_restore_test",
                cron=options.cadence.restore_test,
                description="Drill every retained backup of every database",
                keys_of=test_keys,
            ),
        ],
    )
