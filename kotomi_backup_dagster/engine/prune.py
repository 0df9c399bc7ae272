"""Pruning a store by a retention policy, with the safety rails in one place.

The plan (restic `forget` semantics) is `retention.plan_backups`: the newest backup is never
removed, a backup whose latest drill failed fills no slot, and neither does one whose objects
are missing or changed on the store (objects.py: a manifest alone is not trusted before
others are removed in its favour); a policy that keeps nothing is refused; and the newest
full-format backup is kept in a store that mixes formats. Removal deletes
the manifest first, so a half-deleted backup is never listed; the archive and drill records
follow. Interrupted uploads (a folder without a manifest) older than a day are cleaned up too.
Each store is pruned on its own.

The keeper's rails (keeper/, docs/immutability.md) come first: the store's versions are read
once (`guard_store`); a backup whose objects were rewritten or hidden, or that claims a time
the store contradicts, fills no slot; where the writer is not trusted, backups are bucketed by
the store's own times; where the store locks objects, every object a kept backup needs is
locked until the backup leaves its longest tier (keeper/locks.py) before anything is
removed; and a removal the store refuses because of a lock is "retained until", not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .archive import parse_recipients
from .errors import BackupError, ConfigError
from .keeper.guard import FLOOR, KeeperSettings, StoreGuard, guard_store
from .keeper.horizons import Need, backup_need
from .keeper.locks import LockMemory, LockReport, extend_locks, plan_locks
from .layout import (
    DrillRecord,
    Listing,
    backup_prefix,
    latest_drill,
    list_backups,
    manifest_key,
    revision_keys,
)
from .manifest import Manifest, backup_id_time
from .objects import damaged_backups
from .paged.packgc import PackReport, prune_packs
from .retention import BackupRef, RetentionDecision, RetentionPolicy, plan_backups
from .stores import BackupStore, LockingStore, ObjectLocked, ObjectNotFound, safe_url

ORPHAN_AGE = timedelta(days=1)
REASON_NEWEST_FULL = "newest full archive"
# Where the writer is not trusted, a backup that reached the store less than this long ago is
# not removed yet: the newer backups that took its slots may be a stolen writer's garbage, and
# the burst alert (health.py) gives people this long to look.
SETTLE = timedelta(days=1)
REASON_SETTLING = "arrived less than a day ago: removed once newer backups have settled"


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
    locks: LockReport | None = None  # where the store locks objects
    retained: dict[str, str] = field(default_factory=dict)  # backup_id -> "locked until ..."
    guard: StoreGuard | None = None

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


def refs_of(
    listing: Listing,
    drills: dict[str, DrillRecord],
    damaged: dict[str, str],
    guard: StoreGuard | None,
) -> list[BackupRef]:
    """The listed backups as the retention rails see them (prune plans with the same)."""
    refs = []
    for manifest in listing.backups:
        drill = drills.get(manifest.backup_id)
        time, _ = guard.time_of(manifest) if guard else (manifest.created, None)
        problems = [damaged.get(manifest.backup_id), guard.problem_of(manifest) if guard else None]
        refs.append(
            BackupRef(
                manifest.backup_id,
                time,
                drill_failed=bool(drill and not drill.ok),
                problem="; ".join(p for p in problems if p) or None,
            )
        )
    return refs


def backup_refs(
    store: BackupStore, name: str, listing: Listing, guard: StoreGuard | None = None
) -> list[BackupRef]:
    """The listed backups as the safety rails see them: each one's latest drill, whether its
    objects are still on the store as its manifest says, and what the keeper's guard found
    (tampering, the store's own time)."""
    drills = {}
    for manifest in listing.backups:
        record = latest_drill(store, name, manifest.backup_id)
        if record is not None:
            drills[manifest.backup_id] = record
    return refs_of(listing, drills, damaged_backups(store, listing.backups), guard)


def plan_store(
    store: BackupStore,
    name: str,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    listing: Listing | None = None,
    guard: StoreGuard | None = None,
) -> tuple[list[PlannedBackup], list[str]]:
    """The plan for every complete backup on the store, and its interrupted uploads."""
    listing = listing or list_backups(store, name)
    refs = backup_refs(store, name, listing, guard)
    try:
        plan = plan_with_rails(listing.backups, refs, policy, now, guard)
    except ValueError as exc:
        raise ConfigError(f"refusing to prune {safe_url(store.url)}: {exc}") from exc
    return plan, listing.incomplete


def plan_with_rails(
    backups: Sequence[Manifest],
    refs: Sequence[BackupRef],
    policy: RetentionPolicy,
    now: datetime | None,
    guard: StoreGuard | None,
) -> list[PlannedBackup]:
    """`plan_listed`, and where the writer is not trusted, nothing that arrived within a day
    removed (`SETTLE`): what prune does, and what list, health and the catalog show."""
    plan = plan_listed(backups, refs, policy, now=now)
    if guard is not None and guard.trusted_times:
        plan = _keep_settling(plan, now or datetime.now(UTC))
    return plan


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


def needs_of(plan: list[PlannedBackup], policy: RetentionPolicy, now: datetime) -> dict[str, Need]:
    """How long each kept backup must stay locked (keeper/horizons.py)."""
    return {
        p.manifest.backup_id: backup_need(p.reasons, p.decision.time, policy, now, FLOOR)
        for p in plan
        if p.keep
    }


def _keep_newest_full(plan: list[PlannedBackup]) -> list[PlannedBackup]:
    """In a store that mixes formats (frequent paged backups, a daily full one), the newest
    full backup stays whatever the tiers say: one archive that restores with `age | zstd`
    alone, without this tool."""
    full = next((p for p in plan if not p.manifest.is_paged), None)
    if full is None or full.keep:
        return plan
    kept = replace(full.decision, keep=True, reasons=[REASON_NEWEST_FULL])
    return [PlannedBackup(p.manifest, kept) if p is full else p for p in plan]


def _keep_settling(plan: list[PlannedBackup], now: datetime) -> list[PlannedBackup]:
    """Backups the tiers would remove but that arrived within `SETTLE` stay for now."""
    return [
        PlannedBackup(p.manifest, replace(p.decision, keep=True, reasons=[REASON_SETTLING]))
        if not p.keep and p.decision.time > now - SETTLE
        else p
        for p in plan
    ]


def delete_backup(store: BackupStore, name: str, backup_id: str) -> None:
    """Manifest first: from that instant the backup is not listed, whatever happens next;
    then its folder and the revisions of its manifest."""
    store.delete(manifest_key(name, backup_id))
    store.delete(backup_prefix(name, backup_id))
    for key in revision_keys(store, name).get(backup_id, []):
        store.delete(key)


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
    keeper: KeeperSettings | None = None,
    lock_memory: Path | None = None,
) -> PruneResult:
    """Apply the policy; lock what stays, then remove the rest; then remove the packs no
    kept paged backup needs and repack the mostly-dead ones (`identities` and the recipients
    are needed for encrypted packs)."""
    moment = now or datetime.now(UTC)
    inventory = store.inventory(name)
    listing = list_backups(store, name, inventory)
    guard = guard_store(store, name, listing, keeper or KeeperSettings(), inventory)
    plan, incomplete = plan_store(store, name, policy, now=moment, listing=listing, guard=guard)
    result = PruneResult(url=safe_url(store.url), plan=plan, dry_run=dry_run, guard=guard)
    if plan and not plan[0].keep:  # belt and braces: plan_backups keeps the newest
        raise BackupError(f"prune plan for {result.url} would remove the newest backup; refused")
    if guard.mode is not None and isinstance(store, LockingStore):
        # Lock what stays before anything goes: a prune killed half-way never leaves a kept
        # backup less protected than its tier says.
        needs = needs_of(plan, policy, moment)
        # A settling backup is held by the bucket's default retention alone: extending the
        # locks of the ~95 daily backups a 15-minute cadence makes would be most of the cost.
        kept = [
            (p.manifest, needs[p.manifest.backup_id])
            for p in plan
            if p.keep and p.reasons != [REASON_SETTLING]
        ]
        targets = plan_locks(kept, (keeper or KeeperSettings()).slack, listing.revised)
        memory = LockMemory(lock_memory, moment) if lock_memory else None
        result.locks = extend_locks(
            store, targets, guard.mode, guard.inventory, dry_run=dry_run, memory=memory
        )
    for orphan in incomplete:
        if orphan in guard.hidden:  # not interrupted: its manifest was hidden; never removed
            result.orphans_kept.append(orphan)
            continue
        if backup_id_time(orphan) < moment - ORPHAN_AGE and not _has_manifest(store, name, orphan):
            result.orphans_removed.append(orphan)
            if not dry_run:
                _delete_or_retain(
                    result, orphan, lambda o=orphan: store.delete(backup_prefix(name, o))
                )
        else:
            result.orphans_kept.append(orphan)  # maybe an upload in progress
    for planned in result.to_remove:
        backup_id = planned.manifest.backup_id
        if not dry_run and not _delete_or_retain(
            result, backup_id, lambda b=backup_id: delete_backup(store, name, b)
        ):
            continue
        result.removed.append(backup_id)
        result.bytes_freed += planned.manifest.archive.size
    result.packs = prune_packs(
        store,
        name,
        now=moment,
        dry_run=dry_run,
        identities=identities,
        recipients=parse_recipients(recipients_text) if identities else (),
        recipients_text=recipients_text,
        removing=result.removed if dry_run else (),
        inventory=guard.inventory,
    )
    result.bytes_freed += result.packs.bytes_freed
    return result


def _delete_or_retain(result: PruneResult, backup_id: str, delete: Any) -> bool:
    """True when removed; a removal the store refuses because of a lock is recorded as
    retained until the lock's end (it is removed by a later prune), not as an error."""
    try:
        delete()
    except ObjectLocked as exc:
        until = f" until {exc.until:%Y-%m-%dT%H:%M:%SZ}" if exc.until else ""
        result.retained[backup_id] = f"locked{until}"
        return False
    return True
