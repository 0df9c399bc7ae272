"""The backup pipeline of one database as assets: snapshot -> archive -> upload.

Verification is a blocking check on the snapshot, so a corrupt database never reaches a
store and the run fails where it happened. Stages hand over a `StagedBackup` (a backup id
and a staging directory); the files stay on disk until every store has them, so
"re-execute from failure" after a failed upload re-runs only the upload.
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
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from ...engine import backup as engine
from ...engine.backup import StagedBackup
from ..databases import DatabaseSpec
from .resources import KotomiBackupResource, upload_retry_policy


def staged_io_key(resource_key: str) -> str:
    """The IO manager that hands a database's `StagedBackup` between stages (staged_io.py)."""
    return f"{resource_key}_staged_io"


def _table(rows: dict[str, int]) -> str:
    lines = ["| table | rows |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(rows.items())]
    return "\n".join(lines)


def build_backup_assets(
    spec: DatabaseSpec, resource_key: str
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    prefix = [spec.name]
    group = f"{spec.key}_backup"
    pool = f"kotomi_backup_{spec.key}"
    kinds = {"sqlite"}

    @asset(
        key=AssetKey([*prefix, "snapshot"]),
        io_manager_key=staged_io_key(resource_key),
        group_name=group,
        required_resource_keys={resource_key},
        pool=pool,
        kinds=kinds,
        description="A consistent online copy of the live database, in the staging directory.",
    )
    def snapshot(context: AssetExecutionContext) -> Output[StagedBackup]:
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        settings = res.settings()
        stores = engine.preflight(settings, contact_stores=False)
        staged, snap = engine.stage_snapshot(settings, stores=stores)
        context.log.info(
            f"snapshot {staged.backup_id} ({snap.method}): {snap.size} bytes in "
            f"{snap.seconds:.2f} s"
        )
        if snap.dropped_staging:
            context.log.info(
                "dropped older staged backups kept for re-execution (they can no longer be "
                f"re-executed from failure): {', '.join(snap.dropped_staging)}"
            )
        return Output(
            staged,
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
        description="SQLite quick_check (or integrity_check), Kotomi's tables, row counts.",
    )
    def verify(context: AssetCheckExecutionContext, snapshot: StagedBackup) -> AssetCheckResult:
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        report = engine.stage_verify(snapshot, res.settings())
        metadata: dict[str, Any] = {
            "backup_id": snapshot.backup_id,
            "mode": report.mode,
            "seconds": round(report.seconds, 3),
            "tables": len(report.tables),
            "total_rows": sum(report.tables.values()),
            "row_counts": MetadataValue.md(_table(report.tables)),
        }
        metadata.update({f"rows_{name}": count for name, count in report.tables.items()})
        if not report.ok:
            metadata["problems"] = MetadataValue.md("\n".join(f"- {p}" for p in report.problems))
            context.log.error(report.summary())
        return AssetCheckResult(
            passed=report.ok,
            severity=AssetCheckSeverity.ERROR,
            description=report.summary(),
            metadata=metadata,
        )

    @asset(
        key=AssetKey([*prefix, "archive"]),
        io_manager_key=staged_io_key(resource_key),
        group_name=group,
        required_resource_keys={resource_key},
        pool=pool,
        kinds={"zstd"},
        description="The verified snapshot, zstd-compressed (and age-encrypted when configured).",
    )
    def archive(context: AssetExecutionContext, snapshot: StagedBackup) -> Output[StagedBackup]:
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        manifest, seconds = engine.stage_archive(snapshot, res.settings())
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
        return Output(snapshot, metadata=metadata)

    @asset(
        key=AssetKey([*prefix, "upload"]),
        group_name=group,
        required_resource_keys={resource_key},
        pool=pool,
        retry_policy=upload_retry_policy(),
        description="The archive on every destination, manifest last: the backup exists.",
    )
    def upload(context: AssetExecutionContext, archive: StagedBackup) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        manifest = engine.load_staged_manifest(archive)
        outcomes = engine.stage_upload(archive, res.stores(), settings=res.settings())
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
            raise Failure(
                description="; ".join(f"upload to {o.url} failed: {o.error}" for o in failed),
                metadata=metadata,
                # Retrying cannot fix a configuration problem (no such bucket, access denied).
                allow_retries=not all(o.permanent for o in failed),
            )
        context.log.info(f"backup {manifest.backup_id} stored at {len(outcomes)} destination(s)")
        return MaterializeResult(metadata=metadata)

    return [snapshot, archive, upload], [verify]
