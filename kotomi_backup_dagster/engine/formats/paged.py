"""The paged format (format 2): only the pages a destination lacks, in packs shared by every
backup that needs them, plus a page map per backup. The machinery is engine/paged/; this is
its face as a `BackupFormat`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..archive import Progress, parse_recipients
from ..errors import BackupError, ConfigError
from ..fsutil import fsync_file
from ..layout import manifest_key
from ..manifest import PAGED_FORMAT, ArchiveInfo, Manifest, rfc3339
from ..paged import HashCache, PageHashes, hash_pages, publish_paged, recipients_fingerprint
from ..paged.delta import DELTA, DELTA_INDEX, DeltaPages, PageSource, SnapshotPages
from ..paged.liveread import LiveReadRequest, LiveReadUnavailable, read_live
from ..paged.publish import MissingBase, page_map_key
from ..paged.rebuild import rebuild_database
from ..priority import live_database_reads, read_ceiling
from ..settings import BackupSettings
from ..snapshot import Snapshot
from ..staging import (
    DRAFT_MANIFEST,
    PAGE_HASHES,
    PAGE_HASHES_INFO,
    SNAPSHOT_INFO,
    VERIFY_INFO,
    StagedBackup,
)
from ..stores import BackupStore, ObjectNotFound, safe_url
from ..verify import VerifyReport
from . import FormatName, Prepared, Publish, Published, draft_manifest


class PagedFormat:
    name: FormatName = "paged"

    def take(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        moment: datetime,
        stores: list[BackupStore],
        contact_stores: bool,
        progress: Progress | None,
        durable: bool,
    ) -> tuple[Snapshot | None, str | None]:
        """Snapshot, check and page hashes in one read of the live database in place
        (paged/liveread.py), when every destination has a backup cached here; (None, why)
        otherwise (a copy is taken, as for the full format).

        `contact_stores` is set by a caller that may contact the stores (the CLI, after its
        preflight): each destination is then asked for its newest backup's manifest first, so
        one deleted by hand costs a copy now rather than a failed upload. Dagster's snapshot
        stage does not contact the stores (their failures belong to the upload stage)."""
        if settings.verify_mode != "quick":
            return None, "a full check reads a copy"
        cache = HashCache(settings.page_hash_cache)
        urls = [safe_url(store.url) for store in stores]
        bases = cache.bases_for(urls, recipients_fingerprint(settings.age_recipients))
        if not bases:
            return None, "not every destination has a backup with these keys cached here"
        landed = cache.landed()
        for store, url in zip(stores if contact_stores else [], urls, strict=False):
            newest = landed[url]["backup_id"]
            try:
                store.get_bytes(manifest_key(settings.name, newest))
            except ObjectNotFound:
                cache.forget_landed(url, frozenset({newest}))
                return None, f"{url} no longer has backup {newest}"
        try:
            with live_database_reads():  # Kotomi reads the same pages (engine/priority.py)
                read = read_live(
                    LiveReadRequest(
                        db_path=settings.require_db(),
                        workdir=staged.workdir,
                        backup_id=staged.backup_id,
                        cache=cache,
                        bases=bases,
                        hashes_out=staged.workdir / PAGE_HASHES,
                        profile=settings.profile,
                        busy_timeout=min(5.0, settings.snapshot_timeout),
                        progress=progress,
                        ceiling=read_ceiling(settings.read_mbps),
                    )
                )
        except LiveReadUnavailable as exc:
            for leftover in (PAGE_HASHES, DELTA, DELTA_INDEX):
                (staged.workdir / leftover).unlink(missing_ok=True)
            return None, f"live read unavailable: {exc}"
        if durable:
            for written in (PAGE_HASHES, DELTA, DELTA_INDEX):
                fsync_file(staged.workdir / written)
        snap = Snapshot(
            path=staged.workdir,  # no copy: never the live file's path (nothing may delete it)
            size=read.hashes.db_size,
            page_size=read.hashes.page_size,
            page_count=read.hashes.page_count,
            journal_mode="wal",
            seconds=read.seconds,
            busy_retries=0,
            method="live read",
        )
        info = asdict(snap)
        info["created_at"] = rfc3339(moment)
        info["format"] = self.name
        info["live_read"] = {
            "bases": read.bases,
            "staged_pages": read.staged_pages,
            "pages_from_wal": read.pages_from_wal,
        }
        staged.write_json(SNAPSHOT_INFO, info)
        staged.write_json(VERIFY_INFO, read.report.record())
        staged.write_bytes(PAGE_HASHES_INFO, read.hashes.to_json())
        return snap, None

    def checked_at_snapshot(self, staged: StagedBackup) -> bool:
        return _live_bases(staged) is not None

    def prepare(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        check: Callable[[], VerifyReport],
        progress: Progress | None,
        durable: bool,
    ) -> tuple[VerifyReport, Prepared]:
        """Hash every page while the check runs (a read in place did both: their records).
        Packs are made per destination at upload, against what that destination has."""
        if self.checked_at_snapshot(staged):
            report = check()
            info, seconds = staged.page_hashes(), 0.0
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-verify") as pool:
                checking = pool.submit(check)
                try:
                    info, seconds = _hash_snapshot(staged, progress)
                except BaseException:
                    wait([checking])
                    raise
                report = checking.result()
        if not report.ok:
            return report, Prepared(None, seconds)
        encrypted = bool(parse_recipients(settings.age_recipients))
        draft = draft_manifest(
            staged,
            report,
            db_sha256=info.db_sha256,
            db_size=info.db_size,
            archive=ArchiveInfo(  # the page map: key, size and sha256 filled in per store
                key=page_map_key(staged.name, staged.backup_id),
                size=0,
                sha256="",
                compression="zstd",
                encryption="age" if encrypted else "none",
            ),
        )
        draft = replace(
            draft,
            format=PAGED_FORMAT,
            paged={"recipients": recipients_fingerprint(settings.age_recipients), "packs": {}},
        )
        staged.write_bytes(DRAFT_MANIFEST, draft.to_json())
        return report, Prepared(draft, seconds)

    @contextlib.contextmanager
    def publisher(
        self, staged: StagedBackup, draft: Manifest, settings: BackupSettings
    ) -> Iterator[Publish]:
        fingerprint = recipients_fingerprint(settings.age_recipients)
        if fingerprint != (draft.paged or {}).get("recipients"):
            raise ConfigError(
                f"backup {draft.backup_id}: KOTOMI_BACKUP_AGE_RECIPIENTS changed since its "
                "archive stage; run the whole backup again"
            )
        recipients = parse_recipients(settings.age_recipients)
        bases = _live_bases(staged)
        pages = staged.workdir / DELTA if bases is not None else staged.snapshot_path
        hashes = staged.workdir / PAGE_HASHES
        if not all(p.exists() for p in (hashes, staged.workdir / PAGE_HASHES_INFO, pages)):
            raise BackupError(
                f"backup {draft.backup_id}: staged pages or page hashes are gone; "
                "run the whole backup again"
            )
        info = staged.page_hashes()
        source: PageSource = (
            DeltaPages(staged.workdir, info.page_size)
            if bases is not None
            else SnapshotPages(pages, info.page_size)
        )
        cache = HashCache(settings.page_hash_cache)

        def publish(store: BackupStore) -> Published:
            url = safe_url(store.url)
            try:
                done = publish_paged(
                    store,
                    draft,
                    source,
                    hashes,
                    staged.workdir,
                    cache=cache,
                    recipients=recipients,
                    recipients_text=settings.age_recipients,
                    bases=bases,
                )
            except MissingBase:
                cache.forget_landed(url, bases or frozenset())  # the next backup copies
                raise
            cache.remember(info, hashes)  # the next backup to this store builds on this one
            cache.mark_landed(url, draft.backup_id, fingerprint)
            return Published(
                bytes=done.stored_bytes, requests=done.requests, manifest=done.manifest
            )

        try:
            yield publish
        finally:
            source.close()

    def published(self, store: BackupStore, draft: Manifest) -> bool:
        """Each destination's paged manifest names its own packs: the same snapshot is it."""
        try:
            raw = store.get_bytes(manifest_key(draft.name, draft.backup_id))
            there = Manifest.from_json(raw)
        except (ObjectNotFound, BackupError):
            return False
        return there.is_paged and there.db_sha256 == draft.db_sha256

    def fetch(
        self,
        store: BackupStore,
        manifest: Manifest,
        dest: Path,
        *,
        identities: list[Any],
        progress: Progress | None,
        durable: bool,
    ) -> Path:
        return rebuild_database(
            store, manifest, dest, identities=identities, progress=progress, durable=durable
        )


def _live_bases(staged: StagedBackup) -> frozenset[str] | None:
    """The bases of a backup read in place (its staged pages are only the change from them)."""
    live = staged.read_json(SNAPSHOT_INFO, "snapshot").get("live_read")
    return frozenset(live["bases"]) if isinstance(live, dict) else None


def _hash_snapshot(staged: StagedBackup, progress: Progress | None) -> tuple[PageHashes, float]:
    started = time.monotonic()
    page_size = int(staged.read_json(SNAPSHOT_INFO, "snapshot")["page_size"])
    path = staged.workdir / PAGE_HASHES
    db_sha256, db_size, hashes_sha256 = hash_pages(staged.snapshot_path, page_size, path, progress)
    info = PageHashes(
        backup_id=staged.backup_id,
        db_sha256=db_sha256,
        db_size=db_size,
        page_size=page_size,
        page_count=db_size // page_size,
        hashes_sha256=hashes_sha256,
    )
    staged.write_bytes(PAGE_HASHES_INFO, info.to_json())
    return info, time.monotonic() - started


PAGED = PagedFormat()
