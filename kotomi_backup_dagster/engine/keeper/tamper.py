"""Has anyone rewritten, hidden or unlocked what a backup needs? And until when is it safe?

Every key of the storage layout is written once (stores/base.py), so on a store that keeps
versions, a key with more than one version, or whose current version is not the one its
manifest recorded, was rewritten; a key whose current version is a delete marker was
hidden. Neither destroys the backup (restores read the recorded versions, which the store
still holds), but both are the footprints of someone with write access to the bucket, so each
such backup is reported, fills no retention slot and is kept. Where locks are expected, an
object locked for less than its backup's tier needs (or not at all) is reported too.

One listing of the store's versions (`BackupStore.inventory`) answers the first two for
every backup at once; lock checks cost a request per object on S3 (the listing has no locks)
and nothing more on GCS.

The same listing gives the store's own time for each manifest: when it first reached the
store, by the provider's clock. A writer chooses `created_at` (and the backup id); it cannot
choose that. See `planning_time`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..layout import manifest_key
from ..manifest import Manifest
from ..objects import expected_objects, short_key, some
from ..readable import readable_duration
from ..stores import BackupStore, LockingStore, ObjectLock, ObjectState

# A manifest's `created_at` may run ahead of the store's clock by this much (clock skew, the
# time between the snapshot and its upload runs the other way).
CLOCK_SKEW = timedelta(minutes=15)


@dataclass
class Protection:
    """What the store says about one backup's objects."""

    backup_id: str
    stored_at: datetime | None = None  # when its manifest first reached the store
    horizon: datetime | None = None  # the earliest lock expiry among its objects (None: unlocked)
    locked: bool = False  # every object it needs is locked
    problems: list[str] = field(default_factory=list)  # rewritten, hidden, unlocked early

    @property
    def tampered(self) -> str | None:
        return "; ".join(self.problems) if self.problems else None


def backup_keys(manifest: Manifest, manifest_keys: Sequence[str] = ()) -> list[str]:
    """Every key a backup needs: its manifest (and the revision in use), then its objects."""
    keys = [manifest_key(manifest.name, manifest.backup_id), *manifest_keys]
    return keys + [k for k in expected_objects(manifest) if k not in keys]


def inspect_protection(
    store: BackupStore,
    manifests: Sequence[Manifest],
    inventory: Mapping[str, ObjectState],
    *,
    needs: Mapping[str, datetime] | None = None,
    revision_keys: Mapping[str, str] | None = None,
    rewritten_manifests: Collection[str] | None = None,
) -> dict[str, Protection]:
    """{backup_id: Protection}. `needs` ({backup_id: the lock its tier needs}): when given,
    the locks are read (LockingStore) and each object locked short of its need is reported.
    `rewritten_manifests`: the listing's judgement of each manifest.json with several
    contents (layout.py: a repack by an earlier version of this tool rewrote it in place);
    without it, any manifest.json with several contents counts as rewritten."""
    found: dict[str, Protection] = {}
    locks: dict[tuple[str, str], ObjectLock | None] = {}
    for manifest in manifests:
        protection = Protection(manifest.backup_id)
        extra = (
            [revision_keys[manifest.backup_id]]
            if revision_keys and manifest.backup_id in revision_keys
            else []
        )
        keys = backup_keys(manifest, extra)
        state = inventory.get(keys[0])
        if state is not None:
            protection.stored_at = state.first_stored_at
        rewritten, hidden, short = [], [], []
        horizon: datetime | None = None
        all_locked = True
        for key in keys:
            state = inventory.get(key)
            if state is None:
                all_locked = False
                continue  # missing: objects.py reports it
            recorded = manifest.version_of(key)
            if key == keys[0] and rewritten_manifests is not None:
                if manifest.backup_id in rewritten_manifests:
                    rewritten.append(short_key(manifest, key))
            elif state.contents > 1 or (recorded and state.version and recorded != state.version):
                # Versions of other bytes, or a current version other than the one recorded
                # (create-only writes make no second version of their own). The same bytes
                # again, an upload re-run by an earlier version of this tool, is no rewrite.
                rewritten.append(short_key(manifest, key))
            if state.hidden:
                hidden.append(short_key(manifest, key))
            if needs is None or not isinstance(store, LockingStore):
                all_locked = False
                continue
            version = recorded or state.version
            if (key, version) not in locks:
                locks[(key, version)] = (
                    state.lock if state.lock_known else store.lock_of(key, version)
                )
            lock = locks[(key, version)]
            if lock is None:
                all_locked = False
                short.append(f"{short_key(manifest, key)} is not locked")
                continue
            horizon = lock.until if horizon is None else min(horizon, lock.until)
            need = needs.get(manifest.backup_id)
            if need is not None and lock.until < need - CLOCK_SKEW:
                short.append(
                    f"{short_key(manifest, key)} is locked until {lock.until:%Y-%m-%dT%H:%MZ}, "
                    f"its tier needs {need:%Y-%m-%dT%H:%MZ}"
                )
        if rewritten:
            protection.problems.append(f"rewritten: {some(rewritten)}")
        if hidden:
            protection.problems.append(f"hidden behind a delete marker: {some(hidden)}")
        if short:
            protection.problems.append(f"unlocked early: {some(short)}")
        protection.horizon = horizon
        protection.locked = all_locked and horizon is not None
        found[manifest.backup_id] = protection
    return found


def planning_time(manifest: Manifest, protection: Protection | None) -> tuple[datetime, str | None]:
    """The time retention buckets a backup by, on a store whose writer is not trusted: the
    store's own time for its manifest (a burst of garbage backups lands in the buckets of
    now, whatever they claim); and a problem when the manifest claims a later time than the
    store saw it (a backup dated in the future must not take the slots of the real ones).
    Where the store gives no time, the manifest's."""
    if protection is None or protection.stored_at is None:
        return manifest.created, None
    stored = protection.stored_at
    if manifest.created > stored + CLOCK_SKEW:
        ahead = readable_duration(manifest.created - stored)
        return (
            stored,
            f"dated {ahead} after it reached the store (created_at {manifest.created_at})",
        )
    return stored, None
