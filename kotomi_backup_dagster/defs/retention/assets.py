"""The `prune` asset of one database: retention applied to every destination on its own."""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ...engine.destinations import at_each_destination, failed, succeeded
from ...engine.errors import ConfigError
from ...engine.priority import in_background
from ...engine.prune import PruneResult, prune_store
from ..backup.assets import SETTINGS_KEY, group_of
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from ..engine_log import engine_log_in
from ..failures import failure, one_line_failures
from ..options import KotomiBackupOptions
from ..replicate import replicate_asset
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


def describe_prune(spec: DatabaseSpec) -> str:
    return (
        f"Remove {spec.name}'s backups outside the retention tiers (manifest first), per "
        "destination; run after every upload, in its own run, and daily."
    )


def build_prune_assets(options: KotomiBackupOptions) -> list[AssetsDefinition]:
    first, *others = options.databases
    template = build_prune_asset(first, options)
    return [template] + [
        replicate_asset(template, first, spec, describe_prune, group_of(spec)) for spec in others
    ]


def build_prune_asset(
    spec: DatabaseSpec, options: KotomiBackupOptions, resource_key: str = SETTINGS_KEY
) -> AssetsDefinition:
    by_name = {s.name: s for s in options.databases} | {spec.name: spec}

    @asset(
        key=AssetKey([spec.name, "prune"]),
        deps=[AssetKey([spec.name, "upload"])],
        group_name=group_of(spec),
        required_resource_keys={resource_key, RETENTION_KEY},
        pool=spec.pool,
        owners=list(options.owners),
        kinds=options.destination_kinds,
        description=describe_prune(spec),
    )
    def prune(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation
        db = by_name[context.asset_key.path[0]]
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        retention: RetentionPolicyResource = getattr(context.resources, RETENTION_KEY)
        with one_line_failures(f"prune of {db.name}"):
            try:
                policy = retention.policy()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            settings = res.settings(db)
            stores = res.stores()
        with engine_log_in(context.log):  # store retries in the event log
            outcomes = in_background(  # one destination failing does not stop the others
                settings.priority,
                at_each_destination,
                stores,
                lambda store: prune_store(
                    store,
                    db.name,
                    policy,
                    identities=settings.identities(),
                    recipients_text=settings.age_recipients,
                    keeper=options.keeper,
                    lock_memory=settings.lock_memory(store.url),
                ),
            )
        failures = [at.error_line() for at in failed(outcomes)]
        for line in failures:
            context.log.error(f"prune failed at {line}")
        results: list[PruneResult] = succeeded(outcomes)
        for result in results:
            context.log.info(
                f"{result.url}: kept {len(result.kept)}, removed {len(result.removed)} "
                f"({', '.join(result.removed) or 'none'})"
            )
            for note in result.packs.notes:
                context.log.warning(f"{result.url}: {note}")
            if result.locks is not None:
                context.log.info(
                    f"{result.url}: {len(result.locks.extended)} lock(s) extended "
                    f"({result.locks.mode}), {result.locks.checked} checked, "
                    f"{result.locks.requests} request(s)"
                )
            for backup_id, why in result.retained.items():
                context.log.info(f"{result.url}: {backup_id} stays: {why}")
        metadata: dict[str, Any] = {
            "policy": policy.describe(),
            "kept": sum(len(r.kept) for r in results),
            "removed": sum(len(r.removed) for r in results),
            "bytes_freed": sum(r.bytes_freed for r in results),
            "interrupted_uploads_removed": sum(len(r.orphans_removed) for r in results),
            "packs_removed": sum(len(r.packs.removed) for r in results),
            "packs_repacked": sum(len(r.packs.repacked) for r in results),
            "locks_extended": sum(len(r.locks.extended) for r in results if r.locks),
            "lock_requests": sum(r.locks.requests for r in results if r.locks),
            "retained_by_locks": sum(len(r.retained) for r in results),
            "kept_backups": MetadataValue.md(_kept_table(results)),
        }
        if failures:
            raise failure("; ".join(failures), metadata=metadata)
        return MaterializeResult(metadata=metadata)

    return prune
