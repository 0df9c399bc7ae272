"""The backup pipeline of one database as assets: snapshot -> archive -> upload.

Verification is a blocking check on the snapshot, so a corrupt database never reaches a
store and the run fails where it happened. Stages hand nothing over in memory: each
materialization records its `backup_id`, and the next stage opens that backup's staging
directory (staged.py), so any stage can run alone, and "re-execute from failure" after a
failed upload re-runs only the upload, on the failed run's own backup.
"""

import dataclasses
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
    asset_check,
)

from ...engine import backup as engine
from ...engine.config import FORMAT_NAMES
from ...engine.priority import in_background
from ...engine.readable import readable_duration, readable_size
from ..databases import DatabaseSpec
from ..engine_log import engine_log_in, progress_lines
from ..failures import failure, one_line_failures, retries_left
from ..options import KotomiBackupOptions
from ..replicate import replicate_asset, replicate_check
from ..scheduling import overdue_after
from .resources import KotomiBackupResource
from .staged import staged_backup_for

SETTINGS_KEY = "kotomi_backup_settings"
# A run's backup format, when its schedule chose one (the frequent cadence: paged); else the
# resource's. Read by the snapshot stage only: later stages follow what it staged.
FORMAT_TAG = "kotomi_backup/format"


def _table(rows: dict[str, int]) -> str:
    lines = ["| table | rows |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(rows.items())]
    return "\n".join(lines)


def group_of(spec: DatabaseSpec) -> str:
    """One asset group per database: its whole lineage in one graph."""
    return f"{spec.key}_backup"


def upload_freshness(options: KotomiBackupOptions) -> FreshnessPolicy | None:
    """The newest upload is overdue after the health sensor's stale threshold."""
    return overdue_after(options.health_thresholds().stale_after)


def describe_snapshot(spec: DatabaseSpec) -> str:
    return (
        f"A consistent online copy of {spec.name}'s live database in the staging directory "
        "(one read transaction; committed WAL frames included). Checked by `verify`."
    )


def describe_archive(spec: DatabaseSpec) -> str:
    return (
        f"{spec.name}'s verified snapshot, zstd-compressed (and age-encrypted when configured). "
        "Run alone, it archives the newest verified snapshot not archived yet."
    )


def describe_upload(spec: DatabaseSpec, stale_after: timedelta | None = None) -> str:
    overdue = (
        f" Overdue after {readable_duration(stale_after)} without a new backup (its freshness "
        "policy and the health sensor's limit, KOTOMI_BACKUP_STALE_HOURS)."
        if stale_after
        else ""
    )
    return (
        f"{spec.name}'s archive on every destination, manifest last: the backup exists. Run "
        f"alone, it uploads the newest archived backup not yet on every destination.{overdue}"
    )


def upload_failure_line(
    name: str,
    failed: list[engine.UploadOutcome],
    retry_number: int,
    policy: RetryPolicy,
    retrying: bool,
) -> str:
    """The CLI's line (engine.upload_failure), with Dagster's next step: the step's own retry,
    or, once they are spent, what to check and "re-execute from failure" (never "run the
    upload again" after Dagster ran it already)."""
    attempts = policy.max_retries + 1
    if retrying:
        return engine.upload_failure(
            name,
            failed,
            after=" yet",
            then=f"the upload step runs again (attempt {retry_number + 2} of {attempts})",
            check=False,
        )
    tried = f" after {retry_number + 1} attempts of the upload step" if retry_number else ""
    return engine.upload_failure(
        name,
        failed,
        after=tried,
        then="re-execute the run from failure (only the upload runs again)",
    )


def build_all_backup_assets(
    options: KotomiBackupOptions,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """Every database's stages: built for the first, copied for the others (replicate.py)."""
    first, *others = options.databases
    assets, checks = build_backup_assets(first, options)
    all_assets, all_checks = list(assets), list(checks)
    stale = options.health_thresholds().stale_after
    describe = [describe_snapshot, describe_archive, lambda s: describe_upload(s, stale)]
    for spec in others:
        all_assets += [
            replicate_asset(a, first, spec, d, group_of(spec))
            for a, d in zip(assets, describe, strict=True)
        ]
        all_checks += [replicate_check(c, first, spec) for c in checks]
    return all_assets, all_checks


def build_backup_assets(
    spec: DatabaseSpec,
    options: KotomiBackupOptions,
    resource_key: str = SETTINGS_KEY,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """`spec`'s stages; their functions serve any configured database (by asset key)."""
    group, keys, pool, owners = group_of(spec), {resource_key}, spec.pool, list(options.owners)
    upload_policy = options.upload_retry_policy()
    encrypted = bool(options.backup.age_recipients)
    by_name = {s.name: s for s in options.databases} | {spec.name: spec}

    def settings_of(context: Any, key: AssetKey) -> Any:
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        settings = res.settings(by_name[key.path[0]])
        chosen = context.run.tags.get(FORMAT_TAG)
        if chosen in FORMAT_NAMES:
            settings = dataclasses.replace(settings, backup_format=chosen)
        return by_name[key.path[0]], res, settings

    @asset(
        key=AssetKey([spec.name, "snapshot"]),
        kinds={"sqlite"},
        description=describe_snapshot(spec),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def snapshot(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        db, _, settings = settings_of(context, context.asset_key)
        with one_line_failures(f"snapshot of {db.name}"), engine_log_in(context.log):
            stores = engine.preflight(settings, contact_stores=False)
            staged, snap = in_background(
                settings.priority, engine.stage_snapshot, settings, stores=stores
            )
        context.log.info(
            f"snapshot {staged.backup_id} ({snap.method}): {readable_size(snap.size)} in "
            f"{snap.seconds:.2f} s"
        )
        if snap.dropped_staging:
            context.log.warning(
                "dropped older staged backups kept for re-execution (they can no longer be "
                f"re-executed from failure): {', '.join(snap.dropped_staging)}"
            )
        return MaterializeResult(
            metadata={
                "backup_id": staged.backup_id,
                "db_bytes": snap.size,
                "page_count": snap.page_count,
                "page_size": snap.page_size,
                "seconds": round(snap.seconds, 3),
                "busy_retries": snap.busy_retries,
                "source_journal_mode": snap.journal_mode,
                "method": snap.method,
                "staging": MetadataValue.path(str(staged.workdir)),
            },
        )

    @asset_check(
        asset=snapshot,
        name="verify",
        blocking=True,
        required_resource_keys={resource_key},
        pool=pool,
        description=(
            "SQLite quick_check (or integrity_check), Kotomi's tables, row counts. Run alone, "
            "it checks the newest staged snapshot."
        ),
    )
    def verify(context: AssetCheckExecutionContext):  # type: ignore[no-untyped-def]  # a generator Dagster reads
        snapshot_key = context.check_specs[0].asset_key
        db, _, settings = settings_of(context, snapshot_key)
        op = context.op_execution_context
        staged = staged_backup_for(
            op.instance, op.run, snapshot_key, settings, "verify", context.log
        )
        with one_line_failures(f"verify of {db.name}"):
            report = in_background(settings.priority, engine.stage_verify, staged, settings)
        metadata: dict[str, Any] = {
            "backup_id": staged.backup_id,
            "mode": report.mode,
            "seconds": round(report.seconds, 3),
            "tables": len(report.tables),
            "total_rows": sum(report.tables.values()),
            "row_counts": MetadataValue.md(_table(report.tables)),
        }
        metadata.update({f"rows_{name}": count for name, count in report.tables.items()})
        if not report.ok:
            metadata["problems"] = MetadataValue.md("\n".join(f"- {p}" for p in report.problems))
        yield AssetCheckResult(
            passed=report.ok,
            severity=AssetCheckSeverity.ERROR,
            description=report.summary(),
            metadata=metadata,
        )
        if not report.ok:
            # The step fails with the cause as its headline; nothing is archived.
            raise failure(
                f"snapshot {staged.backup_id} of {db.name} failed verification, nothing is "
                f"uploaded: {report.summary()}"
            )

    @asset(
        key=AssetKey([spec.name, "archive"]),
        deps=[snapshot],
        kinds={"zstd", "age"} if encrypted else {"zstd"},
        description=describe_archive(spec),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def archive(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        db, _, settings = settings_of(context, context.asset_key)
        snapshot_key = AssetKey([db.name, "snapshot"])
        staged = staged_backup_for(
            context.instance, context.run, snapshot_key, settings, "archive", context.log
        )
        snapshot_file = staged.snapshot_path
        size = snapshot_file.stat().st_size if snapshot_file.exists() else None
        progress = progress_lines(context.log, f"archive of {db.name}", size)
        with one_line_failures(f"archive of {db.name}"), engine_log_in(context.log):
            manifest, seconds = in_background(
                settings.priority, engine.stage_archive, staged, settings, progress
            )
        if manifest.is_paged:
            made = "pages hashed (packs are made per destination at upload)"
        else:
            made = f"{readable_size(manifest.archive.size)} ({manifest.archive.compression}"
            made += f", encryption {manifest.archive.encryption})"
        context.log.info(
            f"archive {manifest.backup_id}: {readable_size(manifest.db_size)} -> {made} in "
            f"{seconds:.2f} s"
        )
        metadata: dict[str, Any] = {
            "backup_id": manifest.backup_id,
            "format": manifest.kind,
            "bytes_in": manifest.db_size,
            "seconds": round(seconds, 3),
            "encryption": manifest.archive.encryption,
            "db_sha256": manifest.db_sha256,
        }
        if not manifest.is_paged:  # a paged backup's packs are made per destination at upload
            ratio = manifest.db_size / manifest.archive.size if manifest.archive.size else 0.0
            metadata["bytes_out"] = manifest.archive.size
            metadata["compression_ratio"] = round(ratio, 3)
            metadata["archive_sha256"] = manifest.archive.sha256
        return MaterializeResult(metadata=metadata)

    @asset(
        key=AssetKey([spec.name, "upload"]),
        deps=[archive],
        kinds=options.destination_kinds,
        retry_policy=upload_policy,
        freshness_policy=upload_freshness(options),
        description=describe_upload(spec, options.health_thresholds().stale_after),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def upload(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        db, res, settings = settings_of(context, context.asset_key)
        archive_key = AssetKey([db.name, "archive"])
        staged = staged_backup_for(
            context.instance, context.run, archive_key, settings, "upload", context.log
        )
        retry = retries_left(context.retry_number, upload_policy.max_retries)
        with one_line_failures(f"upload of {db.name}", retry=retry), engine_log_in(context.log):
            manifest = engine.load_staged_manifest(staged)
            outcomes = in_background(
                settings.priority, engine.stage_upload, staged, res.stores(), settings=settings
            )
        rows = ["| destination | result | stored | seconds |", "|---|---|---:|---:|"]
        for o in outcomes:
            result = (
                "already there" if o.already_there else ("ok" if o.ok else f"FAILED: {o.error}")
            )
            rows.append(f"| {o.url} | {result} | {readable_size(o.bytes)} | {o.seconds:.2f} |")
        metadata: dict[str, Any] = {
            "backup_id": manifest.backup_id,
            "destinations": MetadataValue.md("\n".join(rows)),
            "destinations_ok": sum(o.ok for o in outcomes),
            "destinations_failed": sum(not o.ok for o in outcomes),
            "bytes_uploaded": sum(o.bytes for o in outcomes),
            "requests": sum(o.requests for o in outcomes),
            "seconds": round(sum(o.seconds for o in outcomes), 3),
            "archive_bytes": manifest.archive.size,
            "db_bytes": manifest.db_size,
            "format": manifest.kind,
        }
        written = [o.manifest.paged or {} for o in outcomes if o.manifest is not None]
        if written:  # paged: what the destinations stored (none when every upload failed)
            metadata["new_pages"] = max(int(p.get("new_pages", 0)) for p in written)
            metadata["reused_pages"] = manifest.page_count - metadata["new_pages"]
        failed = [o for o in outcomes if not o.ok]
        if failed:
            # Retrying cannot fix a configuration problem (no such bucket, access denied);
            # on the last attempt the Failure itself is the headline, not "Exceeded max_retries".
            retrying = retry and not all(o.permanent for o in failed)
            raise failure(
                upload_failure_line(db.name, failed, context.retry_number, upload_policy, retrying),
                metadata=metadata,
                retry=retrying,
            )
        context.log.info(f"backup {manifest.backup_id} stored at {len(outcomes)} destination(s)")
        return MaterializeResult(metadata=metadata)

    return [snapshot, archive, upload], [verify]
