"""The backup area: every database's assets, the one job that runs them, and its schedules
(each tick asks for one run per database)."""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, Definitions, define_asset_job

from ...engine.config import DAILY_AT_2, EVERY_15_MINUTES
from ..databases import DatabaseSpec
from ..options import HOURLY, KotomiBackupOptions
from ..scheduling import per_database_schedule
from .assets import FORMAT_TAG, SETTINGS_KEY, build_all_backup_assets

BACKUP_JOB = "kotomi_backup"


def backup_keys(spec: DatabaseSpec) -> list[AssetKey]:
    return [AssetKey([spec.name, stage]) for stage in ("snapshot", "archive", "upload")]


def build_backup_definitions(options: KotomiBackupOptions) -> Definitions:
    assets, checks = build_all_backup_assets(options)
    job = define_asset_job(
        BACKUP_JOB,
        selection=AssetSelection.assets(*assets),
        tags={"kotomi_backup/area": "backup"},
        description=(
            "Back up: snapshot, verify, compress (+encrypt), upload. A scheduled run backs up "
            "one database; launched here, every database, one after the other."
        ),
    )
    hourly = options.hourly and not options.cadence.backup
    schedules = [
        per_database_schedule(
            options,
            job,
            name="kotomi_daily_backup",
            cron=options.backup_cron if not hourly else DAILY_AT_2,
            description="Back up every database (KOTOMI_BACKUP_CRON, default daily at 02:00)",
            keys_of=backup_keys,
            running=not hourly,
        ),
        per_database_schedule(
            options,
            job,
            name="kotomi_frequent_backup",
            cron=options.cadence.frequent or EVERY_15_MINUTES,
            description=(
                "A paged backup of every database, every 15 minutes by default: the pages that "
                "changed, read in place (KOTOMI_BACKUP_FREQUENT_CRON; off turns it off)"
            ),
            keys_of=backup_keys,
            running=bool(options.cadence.frequent),
            tags={FORMAT_TAG: "paged"},
        ),
        per_database_schedule(
            options,
            job,
            name="kotomi_hourly_backup",
            cron=HOURLY,
            description="Back up every database every hour (on when hourly tiers are kept)",
            keys_of=backup_keys,
            running=hourly,
        ),
    ]
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job],
        schedules=schedules,
        resources={SETTINGS_KEY: options.backup},
    )
