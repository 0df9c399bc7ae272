"""The storage layout (docs/architecture.md#storage-layout): where a backup's objects live,
the listing of a store's backups, and drill records:

<name>/<backup_id>/manifest.json     written last: a backup exists iff its manifest does
<name>/<backup_id>/<name>.db.zst     (.age when encrypted)
<name>/<backup_id>/drills/<ts>.json
<name>/revisions/<backup_id>.<ts>.json   the manifest as a repack changed it (new packs)

Every key is written once. What changes about a backup after it was made (a repack moves its
pages to new packs) is a new revision of its manifest under a new key; `manifest.json` stays
as the backup was first written, and the newest revision that describes the same database
is the one used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from .errors import BackupError
from .manifest import MANIFEST_NAME, Manifest, is_backup_id
from .stores import BackupStore, ObjectNotFound, ObjectState, UnreadableObject, safe_url


def backup_prefix(name: str, backup_id: str) -> str:
    return f"{name}/{backup_id}"


def manifest_key(name: str, backup_id: str) -> str:
    return f"{backup_prefix(name, backup_id)}/{MANIFEST_NAME}"


REVISIONS = "revisions"


def revisions_prefix(name: str) -> str:
    return f"{name}/{REVISIONS}"


def revision_key(name: str, backup_id: str, written_at: datetime) -> str:
    stamp = written_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{revisions_prefix(name)}/{backup_id}.{stamp}.json"


def revision_keys(store: BackupStore, name: str) -> dict[str, list[str]]:
    """{backup_id: revision keys, newest first} of every revision on the store."""
    found: dict[str, list[str]] = {}
    for child in store.list_children(revisions_prefix(name)):
        backup_id, dot, rest = child.partition(".")
        if dot and rest.endswith(".json") and is_backup_id(backup_id):
            found.setdefault(backup_id, []).append(f"{revisions_prefix(name)}/{child}")
    for keys in found.values():
        keys.sort(reverse=True)
    return found


def same_backup(original: Manifest, revision: Manifest) -> bool:
    """A revision may move pages to other objects, never describe another database."""
    return all(
        getattr(original, f) == getattr(revision, f)
        for f in (
            "backup_id",
            "name",
            "created_at",
            "db_sha256",
            "db_size",
            "page_size",
            "page_count",
            "tables",
            "format",
        )
    )


def current_manifest(
    store: BackupStore, original: Manifest, revisions: list[str], where: str
) -> tuple[Manifest, bytes | None, str | None]:
    """The newest revision of `original` that describes the same backup (with its raw bytes
    and key), else `original` (and None, None). A store is untrusted: a revision that does
    not read, or describes another database, is passed over."""
    for key in revisions:
        try:
            raw = store.get_bytes(key)
            revision = Manifest.from_json(raw, where=f"{where} (revision)")
        except (ObjectNotFound, UnreadableObject, BackupError):
            continue
        if same_backup(original, revision):
            return revision, raw, key
    return original, None, None


def read_manifest(store: BackupStore, name: str, backup_id: str) -> tuple[Manifest, bytes]:
    """One backup's current manifest (revisions applied) and the raw bytes of its
    manifest.json; ObjectNotFound when the backup does not exist, BackupError when its
    manifest is unusable. Costs a GET and a listing of the revisions."""
    where = f"{safe_url(store.url)}/{name}/{backup_id}"
    raw = store.get_bytes(manifest_key(name, backup_id))
    original = Manifest.from_json(raw, where=where)
    revisions = revision_keys(store, name).get(backup_id, [])
    manifest, _, _ = current_manifest(store, original, revisions, where)
    return manifest, raw


@dataclass(frozen=True)
class Listing:
    """Complete backups, newest first, plus what was found but is not a backup."""

    backups: list[Manifest]
    incomplete: list[str]  # backup dirs without a manifest (interrupted uploads)
    unreadable: list[str]  # manifests that cannot be read or used, oldest first
    problems: dict[str, str] = field(default_factory=dict)  # unreadable id -> why
    revised: dict[str, str] = field(default_factory=dict)  # id -> the revision key in use
    # Backups whose manifest.json has other contents than it was first written with, not by a
    # repack of an earlier version of this tool: read as first written (tampering).
    rewritten: set[str] = field(default_factory=set)

    def unreadable_newer_than(self, backup_id: str) -> list[str]:
        """Unreadable entries that would have been newer than `backup_id`, newest first."""
        return sorted((u for u in self.unreadable if u > backup_id), reverse=True)

    def describe_unreadable(self, ids: list[str]) -> str:
        return "; ".join(f"{i} ({self.problems.get(i, 'unreadable')})" for i in ids)


def list_backups(
    store: BackupStore, name: str, inventory: Mapping[str, ObjectState] | None = None
) -> Listing:
    """Every entry of `name` on the store. A store is untrusted input: an entry whose manifest
    cannot be read or used is listed as unreadable with its reason and never stops the
    others; only a failure of the store itself (unreachable, denied) raises.

    With the store's `inventory`, a manifest.json that has more than one version (it is
    written once: someone rewrote it) is read as first written, by its oldest version."""
    backups: list[Manifest] = []
    incomplete: list[str] = []
    problems: dict[str, str] = {}
    children = store.list_children(name)
    revisions = revision_keys(store, name) if REVISIONS in children else {}
    revised: dict[str, str] = {}
    rewritten: set[str] = set()
    for child in children:
        if not is_backup_id(child):
            continue
        where = f"{safe_url(store.url)}/{name}/{child}"
        state = (inventory or {}).get(manifest_key(name, child))
        changed = state is not None and state.contents > 1 and bool(state.first_version)
        try:
            raw = store.get_bytes(
                manifest_key(name, child), state.first_version if changed and state else ""
            )
        except ObjectNotFound:
            incomplete.append(child)
            continue
        except UnreadableObject as exc:
            problems[child] = _reason(str(exc), where)
            continue
        try:
            manifest = Manifest.from_json(raw, where=where)
        except BackupError as exc:
            problems[child] = _reason(str(exc), where)
            continue
        if manifest.backup_id != child or manifest.name != name:
            problems[child] = "its manifest describes another backup"
            continue
        if changed:
            legacy = _legacy_repack(store, name, manifest, where)
            if legacy is None:
                rewritten.add(child)
            else:
                manifest = legacy
        if child in revisions:
            manifest, _, key = current_manifest(store, manifest, revisions[child], where)
            if key is not None:
                revised[child] = key
        backups.append(manifest)
    backups.sort(key=lambda m: m.backup_id, reverse=True)
    return Listing(
        backups=backups,
        incomplete=incomplete,
        unreadable=sorted(problems),
        problems=problems,
        revised=revised,
        rewritten=rewritten,
    )


def _legacy_repack(
    store: BackupStore, name: str, original: Manifest, where: str
) -> Manifest | None:
    """The current manifest.json when it is a repack by a version of this tool that rewrote
    manifests in place (the same database, `repacked_at` set), else None. Trusting it costs
    at worst a restore that fails its sha256 check, never a wrong database."""
    try:
        current = Manifest.from_json(
            store.get_bytes(manifest_key(name, original.backup_id)), where=where
        )
    except (ObjectNotFound, UnreadableObject, BackupError):
        return None
    if same_backup(original, current) and (current.paged or {}).get("repacked_at"):
        return current
    return None


def read_hidden_manifest(store: BackupStore, name: str, backup_id: str) -> Manifest | None:
    """A backup whose manifest.json is behind a delete marker (someone hid it): its manifest
    as written, read by its version id; None when the backup is not hidden so (one listing
    of the backup's versions)."""
    key = manifest_key(name, backup_id)
    state = store.inventory(backup_prefix(name, backup_id)).get(key)
    if state is None or not state.hidden or not state.version:
        return None
    where = f"{safe_url(store.url)}/{name}/{backup_id}"
    try:
        manifest = Manifest.from_json(store.get_bytes(key, state.version), where=where)
    except (ObjectNotFound, UnreadableObject, BackupError):
        return None
    return manifest if manifest.backup_id == backup_id and manifest.name == name else None


def _reason(message: str, where: str) -> str:
    """The message without its location prefix (the listing names the entry already)."""
    return message.removeprefix(f"{where}: ").removeprefix(f"{where}/{MANIFEST_NAME}: ")


# Drill records: one JSON object per drill, beside the backup it drilled.
DRILLS = "drills"


@dataclass(frozen=True)
class DrillRecord:
    backup_id: str
    drilled_at: str  # RFC 3339 UTC
    ok: bool
    problems: list[str]
    rto_seconds: float  # download + decrypt + decompress + checks
    db_size: int
    tool_version: str
    checks: dict[str, object]

    @property
    def time(self) -> datetime:
        return datetime.strptime(self.drilled_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DrillRecord:
        """A record from the store; ValueError when it is not a usable one (a store is
        untrusted input: its records decide which backups fill retention slots)."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a drill record is a JSON object")
        record = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if not isinstance(record.ok, bool) or not isinstance(record.problems, list):
            raise ValueError("drill record without a boolean ok and a list of problems")
        record.time  # noqa: B018  # raises ValueError for a drilled_at that is not a time
        return record


def drill_key(name: str, backup_id: str, written_at: datetime) -> str:
    # Microseconds: two drills in one second must not overwrite each other's record.
    stamp = written_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{backup_prefix(name, backup_id)}/{DRILLS}/{stamp}.json"


def write_drill(store: BackupStore, name: str, record: DrillRecord) -> str:
    key = drill_key(name, record.backup_id, datetime.now(UTC))
    store.put_bytes(key, record.to_json())
    return key


def list_drills(store: BackupStore, name: str, backup_id: str) -> list[DrillRecord]:
    """Every readable drill record of one backup, newest first."""
    records: list[DrillRecord] = []
    prefix = f"{backup_prefix(name, backup_id)}/{DRILLS}"
    # Keys sort by write time; newest first.
    for child in sorted(store.list_children(prefix), reverse=True):
        if not child.endswith(".json"):
            continue
        try:
            records.append(DrillRecord.from_json(store.get_bytes(f"{prefix}/{child}")))
        except (ObjectNotFound, UnreadableObject, ValueError, TypeError):
            continue
    return records


def latest_drill(store: BackupStore, name: str, backup_id: str) -> DrillRecord | None:
    drills = list_drills(store, name, backup_id)
    return drills[0] if drills else None
