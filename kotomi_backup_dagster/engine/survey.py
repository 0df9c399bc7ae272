"""One store's backups of one database as every reader should see them: `list`, the health
check and the backup catalog all start here, so what they show is what prune would do.

For each backup: its manifest, its newest drill, whether its objects are still there
(objects.py), what the keeper's guard found (keeper/: rewritten or hidden objects, a time the
store contradicts, the lock and how long it holds), and the retention tiers it fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from .keeper.guard import FLOOR, KeeperSettings, StoreGuard, guard_store
from .keeper.horizons import backup_need
from .keeper.tamper import inspect_protection
from .layout import DrillRecord, Listing, latest_drill, list_backups
from .manifest import Manifest
from .objects import damaged_backups
from .prune import PlannedBackup, plan_with_rails, refs_of
from .retention import RetentionPolicy
from .stores import BackupStore

# A kept backup the keeper should have locked for its tier by now: older than this, a lock
# that falls short of its tier is reported (younger ones may not have met a keeper run yet).
KEEPER_GRACE = FLOOR + timedelta(hours=2)


@dataclass(frozen=True)
class Survey:
    listing: Listing
    guard: StoreGuard
    drills: dict[str, DrillRecord] = field(default_factory=dict)  # id -> newest drill
    damaged: dict[str, str] = field(default_factory=dict)  # id -> objects missing or changed
    decisions: dict[str, PlannedBackup] = field(default_factory=dict)  # prune's plan, by id
    policy_error: str | None = None

    @property
    def backups(self) -> list[Manifest]:
        return self.listing.backups

    def tiers(self, backup_id: str) -> list[str]:
        decision = self.decisions.get(backup_id)
        return decision.reasons if decision is not None and decision.keep else []

    @property
    def hidden(self) -> dict[str, str]:
        """Backups whose manifest is behind a delete marker: id -> its manifest's version."""
        return self.guard.hidden

    def arrived_within(self, now: datetime, window: timedelta) -> list[str]:
        """The backups that reached the store within `window` before `now` (its clock)."""
        return [
            i
            for i, p in self.guard.protections.items()
            if p.stored_at is not None and now - window <= p.stored_at <= now + window
        ]

    def tampered(self, backup_id: str) -> str | None:
        """Rewritten or hidden objects, a time the store contradicts, a lock short of its
        tier: what someone with write access to the bucket may have done."""
        manifest = next((m for m in self.backups if m.backup_id == backup_id), None)
        return None if manifest is None else self.guard.problem_of(manifest)

    def locked_until(self, backup_id: str) -> datetime | None:
        """The earliest lock expiry among the objects the backup needs (None: not locked)."""
        protection = self.guard.protections.get(backup_id)
        return protection.horizon if protection is not None and protection.locked else None


def survey_store(
    store: BackupStore,
    name: str,
    policy: RetentionPolicy | None,
    keeper: KeeperSettings | None = None,
    now: datetime | None = None,
) -> Survey:
    """List one store and judge every backup on it. Where the store locks, each backup's own
    objects (manifest, archive or page map) are checked against the lock its tiers need; the
    keeper's prune checks (and extends) the shared packs too."""
    inventory = store.inventory(name)
    listing = list_backups(store, name, inventory)
    drills = {}
    for manifest in listing.backups:
        record = latest_drill(store, name, manifest.backup_id)
        if record is not None:
            drills[manifest.backup_id] = record
    damaged = damaged_backups(store, listing.backups)
    guard = guard_store(store, name, listing, keeper or KeeperSettings(), inventory)
    survey = Survey(listing, guard, drills, damaged)
    if policy is None or not listing.backups:
        return survey
    refs = refs_of(listing, drills, damaged, guard)
    try:
        plan = plan_with_rails(listing.backups, refs, policy, now, guard)
    except ValueError as exc:
        return Survey(listing, guard, drills, damaged, policy_error=str(exc))
    by_id = {p.manifest.backup_id: p for p in plan}
    survey = Survey(listing, guard, drills, damaged, by_id)
    if guard.mode is not None:
        _check_locks(store, survey, policy, now)
    return survey


def _check_locks(
    store: BackupStore, survey: Survey, policy: RetentionPolicy, now: datetime | None
) -> None:
    moment = now or datetime.now(UTC)
    own = survey.backups
    needs: dict[str, datetime] = {}
    for manifest in own:
        decision = survey.decisions.get(manifest.backup_id)
        protection = survey.guard.protections.get(manifest.backup_id)
        stored = protection.stored_at if protection is not None else None
        if decision is None or not decision.keep or stored is None:
            continue
        if stored > moment - KEEPER_GRACE:
            continue  # the keeper may not have seen it yet
        needs[manifest.backup_id] = backup_need(
            decision.reasons, decision.decision.time, policy, moment, FLOOR
        ).until
    # The backups' own objects only: packs are many and shared (the keeper's prune reads
    # every one of their locks).
    bare = [_without_packs(m) for m in own]
    checked = inspect_protection(
        store,
        bare,
        survey.guard.inventory,
        needs=needs,
        revision_keys=survey.listing.revised,
        rewritten_manifests=survey.listing.rewritten,
    )
    for backup_id, protection in checked.items():
        current = survey.guard.protections.get(backup_id)
        if current is None:
            survey.guard.protections[backup_id] = protection
            continue
        current.horizon, current.locked = protection.horizon, protection.locked
        current.problems.extend(p for p in protection.problems if p not in current.problems)


def _without_packs(manifest: Manifest) -> Manifest:
    if not manifest.is_paged:
        return manifest
    return replace(manifest, paged={**(manifest.paged or {}), "packs": {}})
