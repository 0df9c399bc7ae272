"""Publishing a paged backup to one destination: new packs, then the page map, manifest last.

Each destination gets its own page map: pruning repacks each destination on its own, so the
same page may live in differently named packs on two stores. The base is the destination's
copy of the newest backup whose page hashes are in the local cache; pages whose hash equals
the base's same page keep the base's location, the others go into new packs. With no usable
base (first paged backup, new destination, key or page size changed, cache lost) every page
is stored.

Crash safety: nothing references a pack before it has landed whole; the manifest is written
last; and just before it, the destination is asked again that the base still exists unchanged
and that every pack the new backup names is there (a prune running at the same moment would
otherwise remove a pack the new backup reuses).

Every key is written once (stores/base.py): packs have new names per attempt, and a page map
whose key an earlier, interrupted attempt took gets a key of its own. The manifest records the
version of each object it needs, reused packs with the version their first backup recorded.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BackupError
from ..layout import backup_prefix, manifest_key, read_manifest
from ..manifest import Manifest
from ..readable import readable_size
from ..stores import BackupStore, ObjectExists, ObjectNotFound, safe_url
from .delta import PageSource
from .hashes import HashCache, changed_pages
from .packs import PackWriter, StagedPack, pack_key, packs_prefix
from .pagemap import PageMap, splice_page_map

# Each pack that landed, for whoever watches (defs/engine_log.py: the step's event log).
log = logging.getLogger(__name__)

# Identical new pages (free pages, empty leaves) are stored once; the table of those seen is
# bounded so memory does not grow with the database.
SEEN_LIMIT = 16384


def page_map_key(name: str, backup_id: str, generation: str = "") -> str:
    suffix = f".{generation}" if generation else ""
    return f"{backup_prefix(name, backup_id)}/{name}.pages{suffix}.zst"


def recipients_fingerprint(recipients_text: str | None) -> str:
    """Which keys the packs are encrypted to (public keys only): a base encrypted to other
    keys, or not at all, is not reused."""
    keys = sorted(k.strip() for k in (recipients_text or "").split(",") if k.strip())
    if not keys:
        return "none"
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


class MissingBase(BackupError):
    """Only changed pages were staged, and this destination has none of their bases."""


@dataclass(frozen=True)
class Base:
    manifest: Manifest  # as it is now (the newest revision of its manifest)
    original_raw: bytes  # its manifest.json
    page_map: PageMap
    hashes: Path


@dataclass(frozen=True)
class PagedUpload:
    manifest: Manifest
    stored_bytes: int
    requests: int
    new_pages: int
    base: str | None


def load_page_map(store: BackupStore, manifest: Manifest) -> PageMap:
    where = f"{store.url}/{manifest.archive.key}"
    try:
        raw = store.get_bytes(manifest.archive.key, manifest.version_of(manifest.archive.key))
    except ObjectNotFound as exc:
        raise BackupError(
            f"backup {manifest.backup_id}: page map {manifest.archive.key} is missing"
        ) from exc
    if hashlib.sha256(raw).hexdigest() != manifest.archive.sha256:
        raise BackupError(f"{where}: page map sha256 differs from the manifest (tampered or torn)")
    page_map = PageMap.decode(raw, where=where)
    if page_map.page_count != manifest.page_count or page_map.page_size != manifest.page_size:
        raise BackupError(f"{where}: page map does not describe the manifest's database")
    missing = set(page_map.packs) - set(manifest.pack_files())
    if missing:
        raise BackupError(f"{where}: page map names packs the manifest does not list")
    return page_map


def put_page_map(
    store: BackupStore,
    manifest: Manifest,
    page_map: PageMap,
    key: str,
    paged: dict[str, Any],
    versions: dict[str, str],
) -> Manifest:
    """Write `page_map` at a new key (`key`, or beside it when an interrupted earlier attempt
    took that one); returns `manifest` naming it, with `versions` and the page map's own (the
    caller writes that manifest last)."""
    encoded = page_map.encode()
    try:
        stored = store.put_bytes(key, encoded)
    except ObjectExists:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = page_map_key(manifest.name, manifest.backup_id, generation=stamp)
        stored = store.put_bytes(key, encoded)
    archive = replace(
        manifest.archive, key=key, size=len(encoded), sha256=hashlib.sha256(encoded).hexdigest()
    )
    recorded = {k: v for k, v in versions.items() if v}
    if stored.version:
        recorded[key] = stored.version
    return replace(manifest, archive=archive, paged=paged, versions=recorded)


def choose_base(
    store: BackupStore,
    draft: Manifest,
    cache: HashCache,
    fingerprint: str,
    allowed: frozenset[str] | None = None,
) -> Base | None:
    """The newest cached backup this destination has unchanged; only one of `allowed` when
    the staged pages are a delta against those."""
    for info in cache.newest():
        if info.backup_id == draft.backup_id or info.page_size != draft.page_size:
            continue
        if allowed is not None and info.backup_id not in allowed:
            continue
        try:
            manifest, original = read_manifest(store, draft.name, info.backup_id)
        except (ObjectNotFound, BackupError):
            continue
        if (
            not manifest.is_paged
            or manifest.db_sha256 != info.db_sha256
            or (manifest.paged or {}).get("recipients") != fingerprint
        ):
            continue
        hashes = cache.load(info)
        if hashes is None:
            continue
        try:
            page_map = load_page_map(store, manifest)
        except BackupError:
            continue  # a damaged base is not built upon: store every page instead
        return Base(manifest, original, page_map, hashes)
    return None


def publish_paged(
    store: BackupStore,
    draft: Manifest,
    source: PageSource,
    hashes: Path,
    workdir: Path,
    *,
    cache: HashCache,
    recipients: Sequence[Any],
    recipients_text: str | None,
    bases: frozenset[str] | None = None,
) -> PagedUpload:
    """`bases`: when `source` holds only the pages that changed from these cached backups,
    the destination must have one of them."""
    fingerprint = recipients_fingerprint(recipients_text)
    base = choose_base(store, draft, cache, fingerprint, bases)
    if base is None and bases is not None:
        raise MissingBase(
            f"{store.url}: none of the backups this one was staged against "
            f"({', '.join(sorted(bases)) or 'none'}) is there unchanged, and only the changed "
            "pages were staged; the next backup copies the database and stores what is missing"
        )
    requests = 3 if base else 0  # its manifest, the revisions listed, its page map
    pack_dir = workdir / "packs"
    writer = PackWriter(pack_dir, draft.page_size, recipients=recipients)
    try:
        page_map, new_packs, new_pages = _build(draft, source, hashes, base, writer)
    except BaseException:
        writer.abort()
        raise
    try:
        return _upload(store, draft, base, page_map, new_packs, new_pages, fingerprint, requests)
    finally:
        for pack in new_packs:
            pack.path.unlink(missing_ok=True)


def _build(
    draft: Manifest, source: PageSource, hashes: Path, base: Base | None, writer: PackWriter
) -> tuple[PageMap, list[StagedPack], int]:
    page_size, count = draft.page_size, draft.page_count
    packs = list(base.page_map.packs) if base is not None else []
    first_new = len(packs)
    seen: dict[bytes, tuple[int, int]] = {}
    changed = array("I")  # page, pack, entry: 12 bytes per stored page
    new_pages = 0
    for page, digest in changed_pages(hashes, base.hashes if base else None):
        where = seen.get(digest)
        if where is None:
            data = source.read(page)
            if hashlib.sha256(data).digest() != digest:
                raise BackupError(
                    f"backup {draft.backup_id}: staged pages changed since they were "
                    "hashed; run the whole backup again"
                )
            number, entry = writer.add(data)
            where = (first_new + number, entry)
            new_pages += 1
            if len(seen) < SEEN_LIMIT:
                seen[digest] = where
        changed.extend((page, *where))
    new_packs = writer.close()
    packs.extend(p.file for p in new_packs)
    base_map = base.page_map if base is not None else None
    page_map = splice_page_map(base_map, page_size, count, packs, changed)
    return page_map, new_packs, new_pages


def _upload(
    store: BackupStore,
    draft: Manifest,
    base: Base | None,
    page_map: PageMap,
    new_packs: list[StagedPack],
    new_pages: int,
    fingerprint: str,
    requests: int,
) -> PagedUpload:
    name = draft.name
    infos: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    if base is not None:
        known = base.manifest.pack_files()
        infos.update({f: known[f] for f in page_map.packs if f in known})
        for f in infos:
            versions[pack_key(name, f)] = base.manifest.version_of(pack_key(name, f))
    stored = 0
    total = sum(pack.size for pack in new_packs)
    for number, pack in enumerate(new_packs, start=1):
        landed = store.put_file(pack_key(name, pack.file), pack.path, sha256=pack.sha256)
        versions[pack_key(name, pack.file)] = landed.version
        requests += landed.requests
        if landed.size != pack.size:
            raise BackupError(
                f"{store.url}/{pack_key(name, pack.file)}: {landed.size} bytes landed, "
                f"expected {pack.size}; the manifest was not written"
            )
        infos[pack.file] = pack.info()
        stored += pack.size
        log.info(
            "%s: pack %d of %d stored (%s of %s, %d%%)",
            safe_url(store.url),
            number,
            len(new_packs),
            readable_size(stored),
            readable_size(total),
            stored * 100 // total if total else 100,
        )
    paged = {
        "base": base.manifest.backup_id if base else None,
        "recipients": fingerprint,
        "packs": {f: infos[f] for f in page_map.packs},
        "new_packs": [p.file for p in new_packs],
        "new_pages": new_pages,
        "reused_pages": draft.page_count - new_pages,
        "runs": page_map.run_count,
    }
    manifest = put_page_map(
        store, draft, page_map, page_map_key(name, draft.backup_id), paged, versions
    )
    requests += 1
    stored += manifest.archive.size
    _confirm_before_manifest(store, manifest, base)
    requests += 2 if base else 1
    body = manifest.to_json()
    store.put_bytes(manifest_key(name, draft.backup_id), body)
    requests += 1
    stored += len(body)
    return PagedUpload(
        manifest=manifest,
        stored_bytes=stored,
        requests=requests,
        new_pages=new_pages,
        base=base.manifest.backup_id if base else None,
    )


def _confirm_before_manifest(store: BackupStore, manifest: Manifest, base: Base | None) -> None:
    """The last look before the manifest makes the backup exist (see module docstring)."""
    name = manifest.name
    if base is not None:
        # manifest.json itself (a revision written meanwhile is caught by the pack check
        # below: a repack removes the packs it replaced).
        try:
            now = store.get_bytes(manifest_key(name, base.manifest.backup_id))
        except ObjectNotFound:
            now = b""
        if now != base.original_raw:
            raise BackupError(
                f"{store.url}: base backup {base.manifest.backup_id} changed during the upload "
                "(a prune ran at the same time); run the upload again"
            )
    present = set(store.list_children(packs_prefix(name)))
    missing = sorted(set(manifest.pack_files()) - present)
    if missing:
        raise BackupError(
            f"{store.url}: {len(missing)} pack(s) this backup needs are missing "
            f"(first: {missing[0]}); the manifest was not written, run the upload again"
        )
