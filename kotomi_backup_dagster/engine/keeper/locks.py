"""The keeper's locks: every object a kept backup needs stays locked until the backup leaves
its longest retention tier (horizons.py), and a shared pack until the latest need of any kept
backup that names it.

Locks are only ever extended, never shortened (the providers refuse that too, in COMPLIANCE
and in GOVERNANCE without the bypass right). New objects get the bucket's default retention
from their first second (the writer needs no lock right); the keeper extends from there.

Cost: an object is extended only when its lock falls short of its need, and then to the need
plus `slack` where the need moves with time (a shared pack, a backup kept only as the newest,
"last N"): so a pack is re-locked about once per slack, not at every backup. Reading a lock is
a request per object on S3 (HeadObject), free on GCS (the listing carries it); `LockMemory`
remembers what was read or set for a day, so a keeper that runs hourly reads each lock about
once a day (a lock only ever grows, so a remembered one is a floor).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..fsutil import atomic_write_bytes
from ..manifest import Manifest
from ..paged.packs import pack_key
from ..stores import LockingStore, ObjectLock, ObjectState, safe_url
from .horizons import Need
from .tamper import backup_keys


@dataclass(frozen=True)
class LockTarget:
    """One object version that must stay locked until `need`; extended to `until`."""

    key: str
    version: str
    need: datetime
    until: datetime
    why: str  # "backup <id> (monthly 2026-11)" or "pack used by 3 kept backups"


@dataclass
class LockReport:
    """What a lock pass did at one destination."""

    url: str
    mode: str | None = None  # the mode new locks get; None: locks are off here
    why_off: str = ""
    checked: int = 0  # objects whose lock was compared
    extended: list[tuple[str, datetime]] = field(default_factory=list)  # key, new expiry
    requests: int = 0  # lock reads plus extensions sent
    dry_run: bool = False

    @property
    def active(self) -> bool:
        return self.mode is not None


def plan_locks(
    kept: Sequence[tuple[Manifest, Need]],
    slack: timedelta,
    revision_keys: Mapping[str, str] | None = None,
) -> list[LockTarget]:
    """Every object a kept backup needs, with how long: a backup's own objects until its
    need (plus slack when it is rolling), a pack until the latest need among its backups
    plus slack."""
    own: dict[str, LockTarget] = {}
    packs: dict[str, list[tuple[Manifest, Need]]] = {}
    for manifest, need in kept:
        revision = (revision_keys or {}).get(manifest.backup_id)
        pack_keys = {pack_key(manifest.name, p) for p in manifest.pack_files()}
        for key in backup_keys(manifest, [revision] if revision else []):
            if key in pack_keys:
                packs.setdefault(key, []).append((manifest, need))
                continue
            until = need.until + slack if need.rolling else need.until
            why = f"backup {manifest.backup_id} ({need.reason})"
            own[key] = LockTarget(key, manifest.version_of(key), need.until, until, why)
    targets = list(own.values())
    for key, users in sorted(packs.items()):
        manifest, need = max(users, key=lambda u: u[1].until)
        version = next((m.version_of(key) for m, _ in users if m.version_of(key)), "")
        why = f"pack used by {len(users)} kept backup(s), longest {manifest.backup_id}"
        targets.append(LockTarget(key, version, need.until, need.until + slack, why))
    return targets


class LockMemory:
    """The locks this keeper last read or set at one store, for a day (a JSON file in its
    staging area; None: remember nothing). Versions are part of the key: a rewritten object
    is another object."""

    TTL = timedelta(days=1)

    def __init__(self, path: Path | None, now: datetime) -> None:
        self.path, self.now = path, now
        self.known: dict[str, dict[str, str]] = {}
        if path is not None:
            try:
                data = json.loads(path.read_bytes())
                self.known = {k: v for k, v in data.items() if isinstance(v, dict)}
            except (OSError, ValueError):
                self.known = {}

    def get(self, key: str, version: str) -> ObjectLock | None:
        entry = self.known.get(f"{key}@{version}")
        if entry is None:
            return None
        try:
            if self.now - datetime.fromisoformat(entry["seen"]) > self.TTL:
                return None
            return ObjectLock(entry["mode"], datetime.fromisoformat(entry["until"]))
        except (KeyError, ValueError, TypeError):
            return None

    def put(self, key: str, version: str, lock: ObjectLock) -> None:
        self.known[f"{key}@{version}"] = {
            "mode": lock.mode,
            "until": lock.until.isoformat(),
            "seen": self.now.isoformat(),
        }

    def save(self) -> None:
        if self.path is None:
            return
        fresh = {k: v for k, v in self.known.items() if self.get(*k.rsplit("@", 1)) is not None}
        atomic_write_bytes(self.path, json.dumps(fresh, sort_keys=True).encode())


def extend_locks(
    store: LockingStore,
    targets: Sequence[LockTarget],
    mode: str,
    inventory: Mapping[str, ObjectState],
    *,
    dry_run: bool = False,
    memory: LockMemory | None = None,
) -> LockReport:
    """Extend each target whose lock falls short of its need (or that has none) to its
    `until`, keeping an existing lock's mode; nothing is ever shortened."""
    report = LockReport(url=safe_url(str(getattr(store, "url", ""))), mode=mode, dry_run=dry_run)
    memory = memory or LockMemory(None, datetime.now(UTC))
    for target in targets:
        state = inventory.get(target.key)
        if state is None:
            continue  # gone: objects.py reports the backup as damaged
        version = target.version or state.version
        current = memory.get(target.key, version)
        if current is None or current.until < target.need:  # not known to be enough: read it
            if state.lock_known:
                current = state.lock
            else:
                current = store.lock_of(target.key, version)
                report.requests += 1
            if current is not None:
                memory.put(target.key, version, current)
        report.checked += 1
        if current is not None and current.until >= target.need:
            continue
        report.extended.append((target.key, target.until))
        if not dry_run:
            keep = current.mode if current else mode
            extended = store.extend_lock(target.key, version, target.until, keep)
            memory.put(target.key, version, extended)
            report.requests += 1
    if not dry_run:
        memory.save()
    return report
