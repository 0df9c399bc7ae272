"""Pruning a store by a retention policy, with the safety rails in one place.

The plan (restic `forget` semantics) is `retention.plan_backups`: the newest backup is never
removed, a backup whose latest drill failed fills no slot, and neither does one whose objects
are missing or changed on the store (objects.py: a manifest alone is not trusted before
others are removed in its favour); a policy that keeps nothing is refused; and the newest
full-format backup is kept in a store that mixes formats. Removal deletes
the manifest first, so a half-deleted backup is never listed; the archive and drill records
follow. Interrupted uploads (a folder without a manifest) older than a day are cleaned up too.
Each store is pruned on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .archive import parse_recipients
from .errors import BackupError, ConfigError
from .layout import Listing, backup_prefix, latest_drill, list_backups, manifest_key
from .manifest import Manifest, backup_id_time
from .objects import damaged_backups
from .paged.packgc import PackReport, prune_packs
from .retention import BackupRef, RetentionDecision, RetentionPolicy, plan_backups
from .stores import BackupStore, ObjectNotFound, safe_url

ORPHAN_AGE = timedelta(days=1)
REASON_NEWEST_FULL = "newest full archive"


@dataclass(frozen=True)
class PlannedBackup:
    manifest: Manifest
    decision: RetentionDecision

    @property
    def keep(self) -> bool:
        return self.decision.keep

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons

    @property
    def problem(self) -> str | None:
        """Why its objects cannot be trusted (it fills no slot), or None."""
        return None if self.decision.item is None else self.decision.item.problem


@dataclass
class PruneResult:
    url: str
    plan: list[PlannedBackup]
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    orphans_removed: list[str] = field(default_factory=list)
    orphans_kept: list[str] = field(default_factory=list)
    packs: PackReport = field(default_factory=PackReport)  # paged backups' shared packs

    @property
    def kept(self) -> list[PlannedBackup]:
        return [p for p in self.plan if p.keep]

    @property
    def to_remove(self) -> list[PlannedBackup]:
        return [p for p in self.plan if not p.keep]

    @property
    def damaged(self) -> dict[str, str]:
        """{backup_id: why} of the backups whose objects are missing or changed."""
        return {p.manifest.backup_id: p.problem for p in self.plan if p.problem}


def backup_refs(store: BackupStore, name: str, listing: Listing) -> list[BackupRef]:
    """The listed backups as the safety rails see them: each one's latest drill, and
    whether its objects are still on the store as its manifest says."""
    damaged = damaged_backups(store, listing.backups)
    refs = []
    for manifest in listing.backups:
        drill = latest_drill(store, name, manifest.backup_id)
        refs.append(
            BackupRef(
                manifest.backup_id,
                manifest.created,
                drill_failed=bool(drill and not drill.ok),
                problem=damaged.get(manifest.backup_id),
            )
        )
    return refs


def plan_store(
    store: BackupStore,
    name: str,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    listing: Listing | None = None,
) -> tuple[list[PlannedBackup], list[str]]:
    """The plan for every complete backup on the store, and its interrupted uploads."""
    listing = listing or list_backups(store, name)
    refs = backup_refs(store, name, listing)
    try:
        plan = plan_listed(listing.backups, refs, policy, now=now)
    except ValueError as exc:
        raise ConfigError(f"refusing to prune {safe_url(store.url)}: {exc}") from exc
    return plan, listing.incomplete


def plan_listed(
    backups: Sequence[Manifest],
    refs: Sequence[BackupRef],
    policy: RetentionPolicy,
    now: datetime | None = None,
) -> list[PlannedBackup]:
    """What prune decides for listed backups and their refs (`backup_refs`), without asking
    the store: the tiers with the safety rails, and the newest full backup of a store that
    mixes formats. `list`, the catalog and the restore test show exactly this. Raises
    ValueError for a policy that cannot plan them."""
    by_id = {m.backup_id: m for m in backups}
    decisions = plan_backups(refs, policy, now=now) if refs else []
    plan = [PlannedBackup(by_id[d.backup_id], d) for d in decisions if d.backup_id]
    return _keep_newest_full(plan)


def _keep_newest_full(plan: list[PlannedBackup]) -> list[PlannedBackup]:
    """In a store that mixes formats (frequent paged backups, a daily full one), the newest
    full backup stays whatever the tiers say: one archive that restores with `age | zstd`
    alone, without this tool."""
    full = next((p for p in plan if not p.manifest.is_paged), None)
    if full is None or full.keep:
        return plan
    kept = replace(full.decision, keep=True, reasons=[REASON_NEWEST_FULL])
    return [PlannedBackup(p.manifest, kept) if p is full else p for p in plan]


def delete_backup(store: BackupStore, name: str, backup_id: str) -> None:
    """Manifest first: from that instant the backup is not listed, whatever happens next."""
    store.delete(manifest_key(name, backup_id))
    store.delete(backup_prefix(name, backup_id))


def _has_manifest(store: BackupStore, name: str, backup_id: str) -> bool:
    """Asked again just before an orphan is removed: a late upload may have completed it."""
    try:
        store.get_bytes(manifest_key(name, backup_id))
    except ObjectNotFound:
        return False
    return True


def prune_store(
    store: BackupStore,
    name: str,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    identities: Sequence[Any] = (),
    recipients_text: str | None = None,
) -> PruneResult:
    """Apply the policy; then remove the packs no kept paged backup needs and repack the
    mostly-dead ones (`identities` and the recipients are needed for encrypted packs)."""
    moment = now or datetime.now(UTC)
    plan, incomplete = plan_store(store, name, policy, now=moment)
    result = PruneResult(url=safe_url(store.url), plan=plan, dry_run=dry_run)
    if plan and not plan[0].keep:  # belt and braces: plan_backups keeps the newest
        raise BackupError(f"prune plan for {result.url} would remove the newest backup; refused")
    for orphan in incomplete:
        if backup_id_time(orphan) < moment - ORPHAN_AGE and not _has_manifest(store, name, orphan):
            result.orphans_removed.append(orphan)
            if not dry_run:
                store.delete(backup_prefix(name, orphan))
        else:
            result.orphans_kept.append(orphan)  # maybe an upload in progress
    for planned in result.to_remove:
        result.removed.append(planned.manifest.backup_id)
        result.bytes_freed += planned.manifest.archive.size
        if not dry_run:
            delete_backup(store, name, planned.manifest.backup_id)
    result.packs = prune_packs(
        store,
        name,
        now=moment,
        dry_run=dry_run,
        identities=identities,
        recipients=parse_recipients(recipients_text) if identities else (),
        recipients_text=recipients_text,
        removing=result.removed if dry_run else (),
    )
    result.bytes_freed += result.packs.bytes_freed
    return result
