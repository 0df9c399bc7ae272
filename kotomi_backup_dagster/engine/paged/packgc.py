"""Pruning packs: remove the packs no kept backup needs, rewrite the mostly-dead ones.

Runs after retention removed backups (their manifests first). The rules that keep it safe
when killed at any point:

- A pack is removed only when no readable manifest on the store names it, at a listing taken
  after every manifest change of this run, and only when it was written more than
  `ORPHAN_AGE` ago (a younger unnamed pack belongs to an upload or a repack in flight). If any
  manifest is unreadable, no pack is removed: its packs cannot be known.
- Only packs older than `ORPHAN_AGE` are repacked: the old pack can then go in the same run.
- Repacking writes the new pack first, then for each backup a new page map under a new key,
  then a new revision of that backup's manifest (layout.py: which switches it over
  atomically; `manifest.json` itself is never rewritten), then removes the old page map.
  Until the switch a backup names only the old packs, after it only packs that landed.
- Repacking needs to read the packs: encrypted ones need the age identity, and are written
  again for the same recipients (KOTOMI_BACKUP_AGE_RECIPIENTS must be the keys the backups
  were made with). Without them, mostly-dead packs are left as they are, and the run says so.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import BackupError, ConfigError
from ..fsutil import scratch_folder, sweep_scratch
from ..layout import backup_prefix, list_backups, revision_key
from ..manifest import Manifest
from ..stores import BackupStore, ObjectLocked, ObjectState
from .packs import (
    PackWriter,
    StagedPack,
    is_old_pack,
    pack_key,
    packs_prefix,
    read_stored_pack,
)
from .pagemap import PageMap, build_page_map
from .publish import load_page_map, page_map_key, put_page_map, recipients_fingerprint

ORPHAN_AGE = timedelta(days=1)
# A pack whose pages are less than half needed by kept backups is rewritten with the live
# ones (restic's default threshold for "prune --max-unused" is of the same order).
REPACK_BELOW = 0.5
REPACK_SCRATCH = "kotomi-repack-"


@dataclass
class PackReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: list[str] = field(default_factory=list)  # unnamed but younger than ORPHAN_AGE
    repacked: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    rewritten_backups: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retained: list[str] = field(default_factory=list)  # unneeded but still locked


def prune_packs(
    store: BackupStore,
    name: str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    identities: Sequence[Any] = (),
    recipients: Sequence[Any] = (),
    recipients_text: str | None = None,
    known_sizes: dict[str, int] | None = None,
    removing: Sequence[str] = (),
    repack: bool = True,
    inventory: Mapping[str, ObjectState] | None = None,
) -> PackReport:
    """`removing`: backups a dry run would have removed (their manifests are still there).
    `repack=False` where objects are locked: a repacked pack's old copy would stay locked
    (and billed) until its lock expires, so rewriting it saves nothing for months."""
    moment = now or datetime.now(UTC)
    report = PackReport()
    if not dry_run:  # what a killed repack left (decrypted pages): gone with the next prune
        sweep_scratch(Path(tempfile.gettempdir()), REPACK_SCRATCH)
    present = store.list_children(packs_prefix(name))
    if not present:
        return report
    # Rewritten manifests are read as first written: a forged one naming fewer packs must not
    # free the packs the original needs (the inventory is from before this prune's removals,
    # which only ever remove manifests).
    listing = list_backups(store, name, inventory)
    if listing.unreadable:
        report.notes.append(
            f"packs left alone: {len(listing.unreadable)} unreadable manifest(s) "
            f"({', '.join(listing.unreadable)}) may need them"
        )
        return report
    sizes = dict(known_sizes or {})
    paged = [m for m in listing.backups if m.is_paged and m.backup_id not in removing]
    for manifest in listing.backups:
        sizes.update({f: int(i["size"]) for f, i in manifest.pack_files().items()})
    if paged and not dry_run and repack:
        _repack(store, name, paged, report, identities, recipients, recipients_text, moment)
        if report.rewritten_backups:
            listing = list_backups(store, name)
            if listing.unreadable:
                report.notes.append("packs left alone: a manifest became unreadable")
                return report
            paged = [m for m in listing.backups if m.is_paged]
    if not dry_run:
        _sweep_leftovers(store, name, paged, moment)
    named = {f for m in paged for f in m.pack_files()}
    for pack in store.list_children(packs_prefix(name)):
        if pack in named:
            continue
        if not is_old_pack(pack, moment, ORPHAN_AGE):
            report.kept_young.append(pack)
            continue
        if not dry_run:
            try:
                store.delete(pack_key(name, pack))
            except ObjectLocked as exc:
                until = f" until {exc.until:%Y-%m-%dT%H:%MZ}" if exc.until else ""
                report.retained.append(f"{pack} (locked{until})")
                continue
        report.removed.append(pack)
        report.bytes_freed += sizes.get(pack, 0)
    return report


def _sweep_leftovers(
    store: BackupStore, name: str, paged: list[Manifest], moment: datetime
) -> None:
    """What killed writers leave: temp files of pack uploads (a local store's), and page
    maps a killed repack wrote but no manifest switched to."""
    store.sweep_partials(packs_prefix(name), (moment - ORPHAN_AGE).timestamp())
    for manifest in paged:
        if not (manifest.paged or {}).get("repacked_at"):
            continue  # only a repack writes a second page map
        folder = backup_prefix(name, manifest.backup_id)
        current = manifest.archive.key.rsplit("/", 1)[-1]
        for child in store.list_children(folder):
            if child.startswith(f"{name}.pages") and child.endswith(".zst") and child != current:
                store.delete(f"{folder}/{child}")


def _live_entries(
    store: BackupStore, paged: list[Manifest]
) -> tuple[dict[str, PageMap], dict[str, bytearray], dict[str, Manifest]]:
    """Page maps of the kept backups, and which entries of each pack they still need."""
    maps: dict[str, PageMap] = {}
    live: dict[str, bytearray] = {}
    owner: dict[str, Manifest] = {}  # a manifest that lists the pack (its size, sha256, pages)
    for manifest in paged:
        page_map = load_page_map(store, manifest)
        maps[manifest.backup_id] = page_map
        infos = manifest.pack_files()
        for run in page_map.iter_runs():
            pack = page_map.packs[run.pack]
            if pack not in live:
                live[pack] = bytearray(int(infos[pack]["pages"]))
                owner[pack] = manifest
            live[pack][run.first_entry : run.first_entry + run.count] = b"\x01" * run.count
    return maps, live, owner


def _repack(
    store: BackupStore,
    name: str,
    paged: list[Manifest],
    report: PackReport,
    identities: Sequence[Any],
    recipients: Sequence[Any],
    recipients_text: str | None,
    moment: datetime,
) -> None:
    maps, live, owner = _live_entries(store, paged)
    fingerprint = recipients_fingerprint(recipients_text)
    candidates: dict[tuple[int, str], list[str]] = {}
    for pack, used in live.items():
        if used.count(1) >= REPACK_BELOW * len(used):
            continue
        if not is_old_pack(pack, moment, ORPHAN_AGE):
            # A young pack could not be removed after its repack (it may still be part of an
            # upload in flight), so repacking now would store its live pages twice; and with
            # frequent backups more of its pages die within the day.
            continue
        manifest = owner[pack]
        encrypted = pack.endswith(".age")
        if encrypted and not identities:
            report.notes.append(
                f"{pack} is mostly unused but encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to repack"
            )
            continue
        if (manifest.paged or {}).get("recipients") != fingerprint:
            report.notes.append(
                f"{pack} is mostly unused but was written for other age recipients than "
                "KOTOMI_BACKUP_AGE_RECIPIENTS: left as it is"
            )
            continue
        candidates.setdefault((manifest.page_size, fingerprint), []).append(pack)
    for (page_size, _), packs in candidates.items():
        new_versions: dict[str, str] = {}
        # Decrypted pages pass through here: private, locked, swept if a prune was killed.
        with scratch_folder(Path(tempfile.gettempdir()), REPACK_SCRATCH) as tmp:
            moved, written = _rewrite_packs(
                store, name, packs, live, owner, page_size, tmp, identities, recipients
            )
            for staged in written:
                landed = store.put_file(
                    pack_key(name, staged.file), staged.path, sha256=staged.sha256
                )
                if landed.size != staged.size:
                    raise BackupError(f"repacked {staged.file}: {landed.size} bytes landed")
                new_versions[staged.file] = landed.version
        report.written.extend(p.file for p in written)
        report.repacked.extend(packs)
        infos = {p.file: p.info() for p in written}
        for manifest in paged:
            page_map = maps[manifest.backup_id]
            if not set(page_map.packs) & set(packs):
                continue
            _switch_backup(
                store, manifest, page_map, moved, infos, [p.file for p in written], new_versions
            )
            report.rewritten_backups.append(manifest.backup_id)


def _rewrite_packs(
    store: BackupStore,
    name: str,
    packs: list[str],
    live: dict[str, bytearray],
    owner: dict[str, Manifest],
    page_size: int,
    directory: Path,
    identities: Sequence[Any],
    recipients: Sequence[Any],
) -> tuple[dict[str, array[int]], list[StagedPack]]:
    """New packs holding the live pages of `packs`; for each old pack, old entry -> new
    location encoded as (new pack number << 32 | entry), -1 for a dead entry."""
    writer = PackWriter(directory, page_size, recipients=recipients)
    moved: dict[str, array[int]] = {}
    try:
        for pack in packs:
            info = owner[pack].pack_files()[pack]
            extractor = _LiveExtractor(live[pack], page_size, writer)
            try:
                read_stored_pack(
                    store,
                    name,
                    pack,
                    info,
                    extractor.take,
                    identities,
                    version=owner[pack].version_of(pack_key(name, pack)),
                )
            except ConfigError:
                raise
            except BackupError as exc:
                raise BackupError(
                    f"repack at {store.url}: {exc}; nothing was changed: "
                    "run `kotomi-backup drill all`"
                ) from exc
            if extractor.pending:
                raise BackupError(f"repack: pack {pack} at {store.url} ends mid-page")
            moved[pack] = extractor.where
        return moved, writer.close()
    except BaseException:
        writer.abort()
        raise


class _LiveExtractor:
    """Receives a pack's raw pages in chunks and copies the live ones into `writer`."""

    def __init__(self, used: bytearray, page_size: int, writer: PackWriter) -> None:
        self.used = used
        self.page_size = page_size
        self.writer = writer
        self.where = array("q", [-1]) * len(used)
        self.pending = bytearray()
        self.entry = 0

    def take(self, offset: int, data: memoryview) -> None:
        self.pending.extend(data)
        size = self.page_size
        whole = len(self.pending) - len(self.pending) % size
        for start in range(0, whole, size):
            if self.entry < len(self.used) and self.used[self.entry]:
                number, new_entry = self.writer.add(bytes(self.pending[start : start + size]))
                self.where[self.entry] = number << 32 | new_entry
            self.entry += 1
        del self.pending[:whole]


def _switch_backup(
    store: BackupStore,
    manifest: Manifest,
    page_map: PageMap,
    moved: dict[str, array[int]],
    infos: dict[str, dict[str, Any]],
    new_files: list[str],
    versions_of: dict[str, str],
) -> None:
    """Point one backup at the new packs: new page map, then a new revision of its manifest,
    then cleanup. `versions_of`: the store's version of each new pack."""
    pack_of, entry_of = page_map.locations()
    packs = list(page_map.packs) + new_files
    first_new = len(page_map.packs)
    for page in range(page_map.page_count):
        old = page_map.packs[pack_of[page]]
        if old in moved:
            where = moved[old][entry_of[page]]
            if where < 0:
                raise BackupError(f"repack: page {page} of {manifest.backup_id} was dropped")
            pack_of[page], entry_of[page] = first_new + (where >> 32), where & 0xFFFFFFFF
    new_map = build_page_map(page_map.page_size, packs, pack_of, entry_of)
    moment = datetime.now(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S%fZ")
    known = {**manifest.pack_files(), **infos}
    paged = dict(manifest.paged or {})
    paged["packs"] = {f: known[f] for f in new_map.packs}
    paged["repacked_at"] = stamp
    name = manifest.name
    versions = {
        pack_key(name, f): versions_of.get(f) or manifest.version_of(pack_key(name, f))
        for f in new_map.packs
    }
    key = page_map_key(name, manifest.backup_id, generation=stamp)
    switched = put_page_map(store, manifest, new_map, key, paged, versions)
    store.put_bytes(revision_key(name, manifest.backup_id, moment), switched.to_json())
    if manifest.archive.key != switched.archive.key:
        store.delete(manifest.archive.key)
