"""The backup pipeline of one database as assets: snapshot -> archive -> upload.

Verification is a blocking check on the snapshot, so a corrupt database never reaches a
store and the run fails where it happened. Stages hand nothing over in memory: each
materialization records its `backup_id`, and the next stage opens that backup's staging
directory (staged.py), so any stage can run alone, and "re-execute from failure" after a
failed upload re-runs only the upload, on the failed run's own backup.
"""

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
    asset,
    asset_check,
)

from ...engine import backup as engine
from ..databases import DatabaseSpec
from ..failures import failure, one_line_failures, retries_left
from ..options import KotomiBackupOptions
from .resources import KotomiBackupResource
from .staged import staged_backup_for

SETTINGS_KEY = "kotomi_backup_settings"


def _table(rows: dict[str, int]) -> str:
    lines = ["| table | rows |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(rows.items())]
    return "\n".join(lines)


def group_of(spec: DatabaseSpec) -> str:
    """One asset group per database: its whole lineage in one graph."""
    return f"{spec.key}_backup"


def upload_freshness(options: KotomiBackupOptions) -> FreshnessPolicy | None:
    """The newest upload is overdue after the health sensor's stale threshold."""
    stale = options.health_thresholds().stale_after
    if stale.total_seconds() <= 0:
        return None
    return FreshnessPolicy.time_window(fail_window=stale)


def build_backup_assets(
    spec: DatabaseSpec,
    options: KotomiBackupOptions,
    resource_key: str = SETTINGS_KEY,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    prefix = [spec.name]
    group, keys, pool, owners = group_of(spec), {resource_key}, spec.pool, list(options.owners)
    snapshot_key = AssetKey([*prefix, "snapshot"])
    archive_key = AssetKey([*prefix, "archive"])
    upload_policy = options.upload_retry_policy()
    encrypted = bool(options.backup.age_recipients)

    def settings_of(context: Any) -> Any:
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        return res, res.settings(spec)

    @asset(
        key=snapshot_key,
        kinds={"sqlite"},
        description=(
            f"A consistent online copy of {spec.name}'s live database in the staging directory "
            "(one read transaction; committed WAL frames included). Checked by `verify`."
        ),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def snapshot(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        _, settings = settings_of(context)
        with one_line_failures(f"snapshot of {spec.name}"):
            stores = engine.preflight(settings, contact_stores=False)
            staged, snap = engine.stage_snapshot(settings, stores=stores)
        context.log.info(
            f"snapshot {staged.backup_id} ({snap.method}): {snap.size} bytes in "
            f"{snap.seconds:.2f} s"
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
        _, settings = settings_of(context)
        op = context.op_execution_context
        staged, _ = staged_backup_for(op.instance, op.run, snapshot_key, settings, "verify")
        with one_line_failures(f"verify of {spec.name}"):
            report = engine.stage_verify(staged, settings)
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
                f"snapshot {staged.backup_id} of {spec.name} failed verification, nothing is "
                f"uploaded: {report.summary()}"
            )

    @asset(
        key=archive_key,
        deps=[snapshot],
        kinds={"zstd", "age"} if encrypted else {"zstd"},
        description=(
            "The verified snapshot, zstd-compressed (and age-encrypted when configured). Run "
            "alone, it archives the newest verified snapshot not archived yet."
        ),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def archive(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        _, settings = settings_of(context)
        staged, _ = staged_backup_for(
            context.instance, context.run, snapshot_key, settings, "archive"
        )
        with one_line_failures(f"archive of {spec.name}"):
            manifest, seconds = engine.stage_archive(staged, settings)
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
        key=AssetKey([*prefix, "upload"]),
        deps=[archive],
        kinds=options.destination_kinds,
        retry_policy=upload_policy,
        freshness_policy=upload_freshness(options),
        description=(
            "The archive on every destination, manifest last: the backup exists. Run alone, "
            "it uploads the newest archived backup not yet on every destination."
        ),
        group_name=group,
        required_resource_keys=keys,
        pool=pool,
        owners=owners,
    )
    def upload(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        res, settings = settings_of(context)
        staged, _ = staged_backup_for(
            context.instance, context.run, archive_key, settings, "upload"
        )
        retry = retries_left(context.retry_number, upload_policy.max_retries)
        with one_line_failures(f"upload of {spec.name}", retry=retry):
            manifest = engine.load_staged_manifest(staged)
            outcomes = engine.stage_upload(staged, res.stores(), settings=settings)
        rows = ["| destination | result | bytes | seconds |", "|---|---|---:|---:|"]
        for o in outcomes:
            result = (
                "already there" if o.already_there else ("ok" if o.ok else f"FAILED: {o.error}")
            )
            rows.append(f"| {o.url} | {result} | {o.bytes} | {o.seconds:.2f} |")
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
            raise failure(
                "; ".join(f"upload to {o.url} failed: {o.error}" for o in failed),
                metadata=metadata,
                retry=retry and not all(o.permanent for o in failed),
            )
        context.log.info(f"backup {manifest.backup_id} stored at {len(outcomes)} destination(s)")
        return MaterializeResult(metadata=metadata)

    return [snapshot, archive, upload], [verify]
