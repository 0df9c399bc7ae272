"""The retention area: per database a prune asset, run after a successful upload (its own
run: a prune failure never marks the backup failed; at most once an hour per database, so a
15-minute cadence does not double its runs) and daily as a backstop. One job, one sensor and
one schedule serve every database."""

import json
import time

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    Definitions,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..databases import DatabaseSpec
from ..options import KotomiBackupOptions
from ..scheduling import per_database_schedule
from .assets import RETENTION_KEY, build_prune_assets

PRUNE_JOB = "kotomi_prune"
PRUNE_SENSOR = "kotomi_prune_after_upload"
# Uploads closer together than this share one prune: the next one after the hour catches up.
PRUNE_AT_MOST_EVERY = 3600.0


def prune_key(spec: DatabaseSpec) -> AssetKey:
    return AssetKey([spec.name, "prune"])


def _prune_after_upload(
    options: KotomiBackupOptions, job: UnresolvedAssetJobDefinition | JobDefinition
) -> SensorDefinition:
    uploads = {AssetKey([spec.name, "upload"]): spec for spec in options.databases}

    @sensor(
        name=PRUNE_SENSOR,
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Prune a database's destinations after each successful upload of it, in a run of "
            "its own (one sensor for every database)."
        ),
    )
    def prune_after_upload(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        # cursor: {database: [storage id of the newest upload pruned for, time of that prune]}
        seen = _read_cursor(context.cursor)
        now = time.time()
        requests = []
        for record in context.instance.get_asset_records(list(uploads)):
            spec = uploads[record.asset_entry.asset_key]
            last = record.asset_entry.last_materialization_record
            done, at = seen.get(spec.name, (0, 0.0))
            if last is None or last.storage_id <= done or now - at < PRUNE_AT_MOST_EVERY:
                continue
            seen[spec.name] = (last.storage_id, now)
            # One prune per upload: the run key makes a re-evaluated event a no-op.
            requests.append(
                RunRequest(
                    run_key=f"{spec.name}:{last.storage_id}",
                    asset_selection=[prune_key(spec)],
                    tags=spec.tags,
                )
            )
        if not requests:
            return SkipReason(
                "no upload since the last prune request, or one less than an hour ago"
            )
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return prune_after_upload


def _read_cursor(cursor: str | None) -> dict[str, tuple[int, float]]:
    """The sensor's cursor; an older one held only storage ids (no time: prune now)."""
    raw = json.loads(cursor) if cursor else {}
    return {
        name: (int(v[0]), float(v[1])) if isinstance(v, list) else (int(v), 0.0)
        for name, v in raw.items()
    }


def build_retention_definitions(options: KotomiBackupOptions) -> Definitions:
    assets = build_prune_assets(options)
    job = define_asset_job(
        PRUNE_JOB,
        selection=AssetSelection.assets(*assets),
        tags={"kotomi_backup/area": "retention"},
        description=(
            "Apply the retention policy to every destination of each database (a scheduled or "
            "sensor run prunes one database; launched here, every database)."
        ),
    )
    return Definitions(
        assets=assets,
        jobs=[job],
        schedules=[
            per_database_schedule(
                options,
                job,
                name="kotomi_daily_prune",
                cron=options.cadence.prune,
                description="Prune every database daily (backstop to the prune after upload)",
                keys_of=lambda spec: [prune_key(spec)],
            )
        ],
        # A keeper on its own host sees no upload events (they are the writer's instance's):
        # it prunes on the daily schedule.
        sensors=[_prune_after_upload(options, job)] if options.writes else [],
        resources={RETENTION_KEY: options.retention},
    )
