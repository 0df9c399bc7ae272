"""The `prune` asset of one database: retention applied to every destination on its own."""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ...engine.errors import BackupError
from ...engine.prune import PruneResult, prune_store
from ...engine.stores import safe_url
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from .resources import RetentionPolicyResource

RETENTION_KEY = "retention_policy"


def _kept_table(results: list[PruneResult]) -> str:
    lines = ["| destination | backup | created | tiers |", "|---|---|---|---|"]
    for r in results:
        for p in r.kept:
            lines.append(
                f"| {r.url} | {p.manifest.backup_id} | {p.manifest.created_at} "
                f"| {', '.join(p.reasons)} |"
            )
    return "\n".join(lines)


def build_prune_asset(spec: DatabaseSpec) -> AssetsDefinition:
    @asset(
        key=AssetKey([spec.name, "prune"]),
        group_name=f"{spec.key}_retention",
        required_resource_keys={spec.resource_key, RETENTION_KEY},
        description="Remove backups outside the retention tiers (manifest first), per destination.",
    )
    def prune(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        res: KotomiBackupResource = getattr(context.resources, spec.resource_key)
        retention: RetentionPolicyResource = getattr(context.resources, RETENTION_KEY)
        policy = retention.policy()
        results: list[PruneResult] = []
        failures: list[str] = []
        for store in res.stores():
            try:
                settings = res.settings()
                result = prune_store(
                    store,
                    spec.name,
                    policy,
                    identities=settings.identities(),
                    recipients_text=settings.age_recipients,
                )
            except BackupError as exc:  # one destination failing does not stop the others
                failures.append(f"{safe_url(store.url)}: {exc}")
                context.log.error(f"prune of {safe_url(store.url)} failed: {exc}")
                continue
            results.append(result)
            context.log.info(
                f"{result.url}: kept {len(result.kept)}, removed {len(result.removed)} "
                f"({', '.join(result.removed) or 'none'})"
            )
            for note in result.packs.notes:
                context.log.warning(f"{result.url}: {note}")
        metadata: dict[str, Any] = {
            "policy": policy.describe(),
            "kept": sum(len(r.kept) for r in results),
            "removed": sum(len(r.removed) for r in results),
            "bytes_freed": sum(r.bytes_freed for r in results),
            "interrupted_uploads_removed": sum(len(r.orphans_removed) for r in results),
            "packs_removed": sum(len(r.packs.removed) for r in results),
            "packs_repacked": sum(len(r.packs.repacked) for r in results),
            "kept_backups": MetadataValue.md(_kept_table(results)),
        }
        if failures:
            raise Failure(description="; ".join(failures), metadata=metadata)
        return MaterializeResult(metadata=metadata)

    return prune
