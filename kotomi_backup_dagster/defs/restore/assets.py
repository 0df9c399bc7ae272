"""Restore drills as assets: the weekly `restore_drill` (latest backup, every destination) and
the monthly `restore_test` (every retained backup, or a sample of the oldest). Each check is
an asset check, so a backup that does not restore shows red and fails the run."""

import os
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ...engine.catalog import DrillRecord
from ...engine.drill import CHECKS, drill_store
from ...engine.manifest import Manifest
from ...engine.stores import safe_url
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec

CHECK_DESCRIPTIONS = {
    "checksums": "Archive and database sha256 equal the manifest's.",
    "integrity": "PRAGMA integrity_check of the restored file returns exactly ok.",
    "row_counts": "Every table's row count equals the manifest's.",
    "kotomi_queries": "The read queries Kotomi serves run on the restored file.",
}


def _drill_all(
    context: AssetExecutionContext, res: KotomiBackupResource, which: str
) -> list[tuple[str, Manifest, DrillRecord]]:
    settings = res.settings()
    results: list[tuple[str, Manifest, DrillRecord]] = []
    for store in res.stores():
        drilled = drill_store(
            store,
            settings.name,
            which,
            identities=settings.identities(),
            scratch_dir=settings.staging_dir,
            profile=settings.profile,
        )
        for manifest, record in drilled:
            verdict = "ok" if record.ok else "FAILED: " + "; ".join(record.problems)
            context.log.info(f"drill {manifest.backup_id} at {safe_url(store.url)}: {verdict}")
            results.append((safe_url(store.url), manifest, record))
    return results


def _check_results(
    key: AssetKey, results: list[tuple[str, Manifest, DrillRecord]]
) -> list[AssetCheckResult]:
    out = []
    for check in CHECKS:
        failed = [
            f"{r.backup_id} at {url}" for url, _, r in results if r.checks.get(check) is False
        ]
        out.append(
            AssetCheckResult(
                asset_key=key,
                check_name=check,
                passed=not failed,
                severity=AssetCheckSeverity.ERROR,
                description="failed on " + ", ".join(failed[:5]) if failed else "passed",
                metadata={"failed": len(failed), "drilled": len(results)},
            )
        )
    return out


def _report(results: list[tuple[str, Manifest, DrillRecord]]) -> str:
    lines = [
        "| destination | backup | created | result | RTO (s) | problems |",
        "|---|---|---|---|---:|---|",
    ]
    for url, m, r in results:
        lines.append(
            f"| {url} | {m.backup_id} | {m.created_at} | {'ok' if r.ok else '**FAILED**'} "
            f"| {r.rto_seconds:.2f} | {'; '.join(r.problems)[:200]} |"
        )
    return "\n".join(lines)


def _drill_checks(key: AssetKey) -> list[AssetCheckSpec]:
    # Blocking: a backup that does not restore fails the run, so the failure alert fires.
    return [
        AssetCheckSpec(name, asset=key, description=text, blocking=True)
        for name, text in CHECK_DESCRIPTIONS.items()
    ]


def build_restore_assets(spec: DatabaseSpec) -> list[AssetsDefinition]:
    group = f"{spec.key}_restore"
    drill_key = AssetKey([spec.name, "restore_drill"])
    test_key = AssetKey([spec.name, "restore_test"])

    @asset(
        key=drill_key,
        group_name=group,
        required_resource_keys={spec.resource_key},
        check_specs=_drill_checks(drill_key),
        description="Restore the latest backup of each destination into scratch space; check it.",
    )
    def restore_drill(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        res: KotomiBackupResource = getattr(context.resources, spec.resource_key)
        results = _drill_all(context, res, "latest")
        newest = max(m.created for _, m, _ in results)
        return MaterializeResult(
            metadata={
                "backup_id": results[0][1].backup_id,
                "rto_seconds": max(r.rto_seconds for _, _, r in results),
                "db_bytes": results[0][1].db_size,
                "archive_bytes": results[0][1].archive.size,
                "backup_age_hours": round((datetime.now(UTC) - newest).total_seconds() / 3600, 2),
                "passed": sum(r.ok for _, _, r in results),
                "failed": sum(not r.ok for _, _, r in results),
                "report": MetadataValue.md(_report(results)),
            },
            check_results=_check_results(drill_key, results),
        )

    @asset(
        key=test_key,
        group_name=group,
        required_resource_keys={spec.resource_key},
        check_specs=_drill_checks(test_key),
        description=(
            "Drill every retained backup in every destination (KOTOMI_BACKUP_RESTORE_TEST_SAMPLE"
            " = N drills only the N oldest per destination)."
        ),
    )
    def restore_test(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        res: KotomiBackupResource = getattr(context.resources, spec.resource_key)
        sample = int(os.environ.get("KOTOMI_BACKUP_RESTORE_TEST_SAMPLE") or 0)
        results = _drill_all(context, res, f"oldest:{sample}" if sample > 0 else "all")
        return MaterializeResult(
            metadata={
                "drilled": len(results),
                "passed": sum(r.ok for _, _, r in results),
                "failed": sum(not r.ok for _, _, r in results),
                "total_rto_seconds": round(sum(r.rto_seconds for _, _, r in results), 3),
                "max_rto_seconds": max(r.rto_seconds for _, _, r in results),
                "report": MetadataValue.md(_report(results)),
            },
            check_results=_check_results(test_key, results),
        )

    return [restore_drill, restore_test]
