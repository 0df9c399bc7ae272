"""What the keeper learns about one store before it decides anything: its versions, the
store's own times, which backups were tampered with, and whether (and how) it locks.

`guard_store` is the one entry: prune, list and the health check call it, then plan as
before with what it found (prune.py). Its cost: one listing of versions (`inventory`) per
database and store, plus two small requests for the bucket's lock settings on S3 and GCS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import config
from ..errors import ConfigError
from ..layout import Listing
from ..manifest import MANIFEST_NAME, Manifest
from ..stores import BackupStore, LockingStore, LockSettings, ObjectState, safe_url
from .tamper import Protection, inspect_protection, planning_time

FLOOR = timedelta(days=1)  # a kept backup is always locked at least this far ahead


@dataclass(frozen=True)
class KeeperSettings:
    """The keeper's settings (config.py: KOTOMI_BACKUP_ROLE, _LOCK, _LOCK_SLACK)."""

    role: str = config.ROLE.default
    lock: str = config.LOCK.default
    slack: timedelta = timedelta(days=10)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeeperSettings:
        slack = config.LOCK_SLACK.read(environ)
        return cls(
            role=config.ROLE.read(environ),
            lock=config.LOCK.read(environ),
            slack=slack.approximate() if slack is not None else timedelta(0),
        )

    @property
    def split(self) -> bool:
        """Writer and keeper are different hosts: what the writer wrote is not trusted."""
        return self.role != "both"


@dataclass
class StoreGuard:
    """One store as the keeper found it."""

    url: str
    inventory: dict[str, ObjectState] = field(default_factory=dict)
    protections: dict[str, Protection] = field(default_factory=dict)
    lock: LockSettings | None = None  # None: a store that cannot lock
    mode: str | None = None  # the mode locks are extended in; None: no locks here
    trusted_times: bool = False  # plan by the store's times, not the manifests'
    # Backups whose manifest.json is behind a delete marker (someone hid them): id -> the
    # version of the manifest that is still there. Listings miss them; prune leaves them.
    hidden: dict[str, str] = field(default_factory=dict)

    def time_of(self, manifest: Manifest) -> tuple[datetime, str | None]:
        """The time retention buckets `manifest` by, and a problem when it claims a time
        the store contradicts (planning_time)."""
        if not self.trusted_times:
            return manifest.created, None
        return planning_time(manifest, self.protections.get(manifest.backup_id))

    def problem_of(self, manifest: Manifest) -> str | None:
        """Why the backup cannot fill a retention slot, by what the store shows."""
        problems = []
        protection = self.protections.get(manifest.backup_id)
        if protection is not None and protection.tampered:
            problems.append(protection.tampered)
        _, dated = self.time_of(manifest)
        if dated:
            problems.append(dated)
        return "; ".join(problems) or None


def lock_mode(
    store: BackupStore, settings: KeeperSettings
) -> tuple[LockSettings | None, str | None]:
    """The bucket's lock settings and the mode to lock in (None: no locks at this store).
    A mode asked for where the store cannot lock is a configuration error."""
    if settings.lock == "off":
        return None, None
    if not isinstance(store, LockingStore):
        if settings.lock != "auto":
            raise ConfigError(
                f"{config.LOCK.name}={settings.lock}, but {safe_url(store.url)} is a folder, "
                "which cannot lock objects: use an S3 bucket with Object Lock or a GCS bucket "
                "with object retention (docs/immutability.md), or set it to auto"
            )
        return None, None
    lock = store.lock_settings()
    if not lock.enabled:
        if settings.lock != "auto":
            raise ConfigError(
                f"{config.LOCK.name}={settings.lock}, but {safe_url(store.url)} has no object "
                "lock: create the bucket with Object Lock (S3) or object retention (GCS) on "
                "(docs/immutability.md), or set it to auto"
            )
        return lock, None
    if settings.lock != "auto":
        return lock, settings.lock
    return lock, lock.default_mode or "compliance"


def guard_store(
    store: BackupStore,
    name: str,
    listing: Listing,
    settings: KeeperSettings,
    inventory: Mapping[str, ObjectState] | None = None,
) -> StoreGuard:
    """Read the store's versions (unless given: `inventory`), lock settings and times for
    `name`'s backups."""
    lock, mode = lock_mode(store, settings)
    inventory = dict(inventory if inventory is not None else store.inventory(name))
    protections = inspect_protection(
        store,
        listing.backups,
        inventory,
        revision_keys=listing.revised,
        rewritten_manifests=listing.rewritten,
    )
    remote = isinstance(store, LockingStore)
    hidden = {
        key.split("/")[-2]: state.version
        for key, state in inventory.items()
        if state.hidden and key.endswith(f"/{MANIFEST_NAME}") and key.count("/") == 2
    }
    return StoreGuard(
        url=safe_url(store.url),
        inventory=inventory,
        protections=protections,
        hidden=hidden,
        lock=lock,
        mode=mode,
        # The store's clock decides where the writer is not trusted: a keeper on another
        # host. (On one host, whoever can forge a manifest can also run the prune.) A
        # folder's times are the host's own.
        trusted_times=remote and settings.split,
    )
