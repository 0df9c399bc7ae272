"""`<name>/backup_catalog`: every backup in every destination, as an observable asset.

Observed on demand (the UI's "Observe" button) and by the database's health sensor (hourly,
and whenever a backup or a drill result appears), with the same metadata: a Markdown table
(id, time, size, retention tiers, last drill) and numbers that plot.
"""

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    DataVersion,
    MetadataValue,
    ObserveResult,
    multi_observable_source_asset,
)

from ...engine.destinations import at_each_destination
from ...engine.errors import first_line
from ...engine.health import DestinationState, inspect_destination, unlistable_destination, utcnow
from ...engine.keeper.guard import KeeperSettings
from ...engine.prune import plan_listed
from ...engine.readable import readable_size
from ...retention import BackupRef, RetentionPolicy
from ..backup.assets import SETTINGS_KEY, group_of
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from ..options import KotomiBackupOptions

DATA_VERSION_TAG = "dagster/data_version"


def catalog_key(spec: DatabaseSpec) -> AssetKey:
    return AssetKey([spec.name, "backup_catalog"])


def read_destinations(
    resource: KotomiBackupResource,
    spec: DatabaseSpec,
    policy: RetentionPolicy | None = None,
    keeper: KeeperSettings | None = None,
) -> list[DestinationState]:
    """Every configured destination of one database, through the backup resource's stores
    (its S3/GCS clients and retries). When the stores cannot all be opened, each URL is
    opened alone, so the one that fails is reported and the others are still listed."""
    name = spec.name
    urls = resource.settings(spec).require_urls()
    try:
        stores = resource.stores()
    except Exception:
        stores = None
    if stores is not None and len(stores) == len(urls):
        return [inspect_destination(store, name, policy, keeper) for store in stores]
    listed = at_each_destination(
        urls, lambda store: inspect_destination(store, name, policy, keeper)
    )
    return [
        unlistable_destination(at.url, at.error) if at.error else cast(DestinationState, at.value)
        for at in listed
    ]


@dataclass(frozen=True)
class CatalogView:
    metadata: dict[str, Any]
    version: str  # changes when a backup, a drill result or a listing error changes


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def _tiers(
    state: DestinationState, now: datetime, policy: RetentionPolicy
) -> tuple[list[str], str | None]:
    """What prune would decide for each backup (newest first), with its safety rails: a
    failed drill or missing objects fill no slot."""
    if not state.backups:
        return [], None
    if state.tiers:  # as survey.py planned them (the store's times, tampering)
        return [
            ", ".join(state.tiers.get(m.backup_id, [])) or "pruned at the next prune"
            for m in state.backups
        ], None
    refs = [
        BackupRef(
            m.backup_id,
            m.created,
            drill_failed=bool((d := state.drills.get(m.backup_id)) and not d.ok),
            problem=state.damaged.get(m.backup_id),
        )
        for m in state.backups
    ]
    try:
        plan = plan_listed(state.backups, refs, policy, now=now)
    except ValueError as exc:
        return ["?"] * len(state.backups), first_line(str(exc))
    by_id = {p.manifest.backup_id: p for p in plan}
    return [
        ", ".join(by_id[m.backup_id].reasons)
        if by_id[m.backup_id].keep
        else "pruned at the next prune"
        for m in state.backups
    ], None


def catalog_view(
    name: str, states: Sequence[DestinationState], now: datetime, policy: RetentionPolicy
) -> CatalogView:
    """The catalog's metadata; `policy`: the retention resource's (the tiers prune keeps)."""
    rows = [
        "| destination | backup | created (UTC) | age (h) | database | archive | tiers "
        "| locked until | last drill |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    notes: list[str] = []
    fingerprint: list[object] = []
    ids: set[str] = set()
    copies = 0
    total_bytes = 0
    failed_drills = 0
    damaged = 0
    tampered = 0
    newest = None
    last_pass = None
    for state in states:
        if not state.listed:
            rows.append(f"| {state.url} | — | — | — | — | — | — | — | cannot list: {state.error} |")
            fingerprint.append([state.url, "error", state.error])
            continue
        if not state.backups:
            rows.append(f"| {state.url} | (no backup) | — | — | — | — | — | — | — |")
        tiers, tier_note = _tiers(state, now, policy)
        if tier_note:
            notes.append(f"retention tiers unknown: {tier_note}")
        for manifest, tier in zip(state.backups, tiers, strict=False):
            drill = state.drills.get(manifest.backup_id)
            if drill is None:
                drill_text = "never drilled"
            elif drill.ok:
                drill_text = f"passed {drill.drilled_at} (RTO {drill.rto_seconds:.1f} s)"
                last_pass = max(last_pass or drill.time, drill.time)
            else:
                failed_drills += 1
                first = first_line(drill.problems[0]) if drill.problems else "failed"
                drill_text = f"**FAILED** {drill.drilled_at}: {first}"
            problem = state.damaged.get(manifest.backup_id)
            if problem:  # fills no slot, whatever the policy says (engine/objects.py)
                damaged += 1
                tier = f"**DAMAGED** {tier}"
            touched = state.tampered.get(manifest.backup_id)
            if touched:  # rewritten, hidden, unlocked early (engine/keeper/tamper.py)
                tampered += 1
                tier = f"**TAMPERED** ({touched}) {tier}"
            until = state.locked_until.get(manifest.backup_id)
            locked = (
                f"{until:%Y-%m-%d %H:%M}"
                if until
                else ("**not locked**" if state.lock_mode else "—")
            )
            age = _hours((now - manifest.created).total_seconds())
            lock = " (encrypted)" if manifest.encrypted else ""
            rows.append(
                f"| {state.url} | `{manifest.backup_id}` | {manifest.created_at} | {age:.1f} "
                f"| {readable_size(manifest.db_size)} | {readable_size(manifest.stored_bytes)}"
                f"{lock} | {tier} | {locked} | {drill_text} |"
            )
            ids.add(manifest.backup_id)
            copies += 1
            total_bytes += manifest.stored_bytes
            if newest is None or manifest.created > newest.created:
                newest = manifest
            fingerprint.append(
                [state.url, manifest.backup_id, drill and drill.drilled_at, problem, touched]
            )
        if state.incomplete or state.unreadable:
            notes.append(
                f"{state.url}: {len(state.incomplete)} incomplete (interrupted uploads), "
                f"{len(state.unreadable)} unreadable manifests"
            )
    table = "\n".join(rows)
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    metadata: dict[str, Any] = {
        "backups": MetadataValue.md(table),
        "backup_count": len(ids),
        "copies": copies,
        "total_bytes": total_bytes,
        "destinations": len(states),
        "destinations_unlistable": sum(not s.listed for s in states),
        "drills_failed": failed_drills,
        "backups_damaged": damaged,
        "backups_tampered": tampered,
    }
    if newest is not None:
        metadata["newest_backup_id"] = newest.backup_id
        metadata["newest_age_hours"] = _hours((now - newest.created).total_seconds())
        metadata["newest_db_bytes"] = newest.db_size
    if last_pass is not None:
        metadata["last_passing_drill_age_hours"] = _hours((now - last_pass).total_seconds())
    digest = hashlib.sha256(json.dumps([name, fingerprint], default=str).encode()).hexdigest()
    return CatalogView(metadata=metadata, version=digest[:16])


def catalog_observation(spec: DatabaseSpec, view: CatalogView) -> AssetObservation:
    return AssetObservation(
        asset_key=catalog_key(spec),
        metadata=view.metadata,
        tags={DATA_VERSION_TAG: view.version},
    )


def build_catalog_asset(
    specs: Sequence[DatabaseSpec], options: KotomiBackupOptions, settings_key: str = SETTINGS_KEY
) -> AssetsDefinition:
    """One observable asset definition for every database's catalog (each its own key, in
    its database's group, downstream of what changes the stores)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # observable assets are "beta"
        return _catalog_asset(specs, options, settings_key)


def _catalog_spec(spec: DatabaseSpec, options: KotomiBackupOptions) -> AssetSpec:
    return AssetSpec(
        catalog_key(spec),
        deps=[
            AssetKey([spec.name, s]) for s in ("upload", "prune", "restore_drill", "restore_test")
        ],
        group_name=group_of(spec),
        owners=list(options.owners),
        kinds=options.destination_kinds,
        description=(
            f"Every backup of {spec.name} in every destination, as the stores list them: id, "
            "time, size, retention tiers and last drill, with counts, newest age and bytes that "
            "plot. Observed by the kotomi_backup_health sensor (and the Observe button)."
        ),
    )


def _catalog_asset(
    specs: Sequence[DatabaseSpec], options: KotomiBackupOptions, settings_key: str
) -> AssetsDefinition:
    by_key = {catalog_key(spec): spec for spec in specs}

    def backup_catalog(context: AssetExecutionContext) -> Iterator[ObserveResult]:
        resource: KotomiBackupResource = getattr(context.resources, settings_key)
        for key in sorted(context.selected_asset_keys):
            spec = by_key[key]
            policy = options.retention_policy()
            states = read_destinations(resource, spec, policy, options.keeper)
            view = catalog_view(spec.name, states, utcnow(), policy)
            yield ObserveResult(
                asset_key=key, data_version=DataVersion(view.version), metadata=view.metadata
            )

    observable = multi_observable_source_asset(
        name="kotomi_backup_catalog",
        specs=[_catalog_spec(spec, options) for spec in specs],
        can_subset=True,
        required_resource_keys={settings_key},
    )
    assets: AssetsDefinition = observable(backup_catalog)
    return assets
