"""One backup in four stages, each leaving its result in a staging directory:

    snapshot -> verify -> archive (compress + encrypt) -> upload (manifest last)

Stages hand over files, not memory, so any stage can be re-run alone (Dagster's
"re-execute from failure" re-runs only the upload after a failed upload). The CLI runs
all four with `run_backup`, which overlaps verification with compression (two cores: SQLite's
check and zstd both run without the GIL, both reading the snapshot from the page cache) and
skips the fsyncs of its transient staging files; nothing is uploaded unless the check passed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from .. import __version__
from .archive import (
    ArchiveResult,
    Progress,
    parse_recipients,
    write_archive,
)
from .catalog import already_published, backup_prefix, manifest_key, publish_backup
from .errors import BackupError, ConfigError
from .fsutil import fsync_file, no_space_is_disk_full
from .manifest import (
    PAGED_FORMAT,
    ArchiveInfo,
    Manifest,
    VerifyInfo,
    backup_id_time,
    new_backup_id,
    rfc3339,
)
from .notify import without_repeated_prefix
from .paged import HashCache, PageHashes, hash_pages, publish_paged, recipients_fingerprint
from .paged.delta import DELTA, DELTA_INDEX, DeltaPages, PageSource, SnapshotPages
from .paged.liveread import LiveReadRequest, LiveReadUnavailable, read_live
from .paged.publish import MissingBase, page_map_key
from .settings import BackupSettings
from .snapshot import Snapshot, check_source, take_snapshot
from .staging import (
    DRAFT_MANIFEST,
    PAGE_HASHES,
    PAGE_HASHES_INFO,
    SNAPSHOT_INFO,
    STALE_STAGING_SECONDS,
    VERIFY_INFO,
    StagedBackup,
    StagingArea,
)
from .stores import BackupStore, ObjectNotFound, deadline, open_store, safe_url
from .verify import VerifyReport, verify_database

__all__ = [
    "STALE_STAGING_SECONDS",
    "BackupResult",
    "StagedBackup",
    "UploadOutcome",
    "load_staged_manifest",
    "preflight",
    "run_backup",
    "stage_archive",
    "stage_snapshot",
    "stage_upload",
    "stage_verify",
    "verify_and_archive",
]


@dataclass(frozen=True)
class UploadOutcome:
    url: str
    ok: bool
    error: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    requests: int = 0
    already_there: bool = False
    permanent: bool = False  # a configuration problem: retrying will not help
    # A paged backup's manifest differs per destination (its packs): the one written there.
    manifest: Manifest | None = None


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    snapshot: Snapshot
    verify: VerifyReport
    outcomes: list[UploadOutcome]
    archive_seconds: float


P = ParamSpec("P")
R = TypeVar("R")


def _in_staging(
    stage: Callable[Concatenate[StagedBackup, P], R],
) -> Callable[Concatenate[StagedBackup, P], R]:
    """Run a stage holding its staged backup's lock (`StagedBackup.working`)."""

    @functools.wraps(stage)
    def holding(staged: StagedBackup, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with staged.working():
            return stage(staged, *args, **kwargs)

    return holding


def preflight(settings: BackupSettings, *, contact_stores: bool = True) -> list[BackupStore]:
    """Everything that can be checked before touching the database, checked first.

    Dagster's snapshot stage passes `contact_stores=False`: an unreachable destination should
    fail the upload stage, which "re-execute from failure" then retries alone.
    """
    check_source(settings.require_db())
    stores = [open_store(url) for url in settings.require_urls()]
    parse_recipients(settings.age_recipients)
    if contact_stores:
        for store in stores:
            store.preflight()
    return stores


def stage_snapshot(
    settings: BackupSettings,
    now: datetime | None = None,
    *,
    durable: bool = True,
    stores: Sequence[BackupStore] | None = None,
    ask_stores: bool = False,
    progress: Progress | None = None,
    hold: bool = False,
) -> tuple[StagedBackup, Snapshot]:
    """Take the snapshot into a new staging directory (staging.py).

    `durable=False` (the CLI's one-process run) skips its fsync (see `take_snapshot`) and
    marks nothing for re-execution: once this process is gone its folder is garbage. A
    durable one is kept for re-execution, and only the newest `settings.keep_staged` such
    backups stay (the older ones' ids, and those dropped for room, are in
    `Snapshot.dropped_staging`). With
    `hold` the folder stays locked for the caller (who ends with `staged.remove()` or
    `staged.release()`). A failed snapshot leaves no folder. A paged backup whose every
    destination already has a backup cached here reads the live database in place instead
    (`_stage_live`): no copy, and its check and hashes are done here too. `stores` are the
    preflight's (else opened here); `ask_stores` lets `_stage_live` ask them.
    """
    db_path = settings.require_db()
    check_source(db_path)
    exact = now or datetime.now(UTC)
    moment = exact.replace(microsecond=0)
    area = StagingArea(settings.staging_dir, settings.name)
    needed = 2 * db_path.stat().st_size
    staged, dropped = area.create(new_backup_id(exact), needed=needed)
    try:
        with no_space_is_disk_full(staged.workdir, needed):
            snap = _take(staged, settings, moment, stores, ask_stores, progress, durable)
        if durable:
            staged.keep_for_reexecution()
    except BaseException:
        staged.remove()
        raise
    if durable:
        dropped += area.keep_newest(settings.keep_staged)
    if not hold:
        staged.release()
    return staged, replace(snap, dropped_staging=tuple(dropped))


def _take(
    staged: StagedBackup,
    settings: BackupSettings,
    moment: datetime,
    stores: Sequence[BackupStore] | None,
    ask_stores: bool,
    progress: Progress | None,
    durable: bool,
) -> Snapshot:
    fallback: str | None = None
    if settings.backup_format == "paged" and settings.verify_mode == "quick":
        stores = stores if stores is not None else [open_store(u) for u in settings.urls]
        live, fallback = _stage_live(
            staged, settings, moment, stores, ask_stores, progress, durable
        )
        if live is not None:
            return live
    snap = take_snapshot(
        settings.require_db(),
        staged.snapshot_path,
        deadline_seconds=settings.snapshot_timeout,
        durable=durable,
    )
    info = asdict(snap)
    info["created_at"] = rfc3339(moment)
    info["format"] = settings.backup_format  # decided here, once: later stages read it
    if fallback:
        info["live_read_unavailable"] = fallback  # why the database was copied instead
    staged.write_json(SNAPSHOT_INFO, info)
    return snap


def _stage_live(
    staged: StagedBackup,
    settings: BackupSettings,
    moment: datetime,
    stores: Sequence[BackupStore],
    ask_stores: bool,
    progress: Progress | None,
    durable: bool,
) -> tuple[Snapshot | None, str | None]:
    """The paged format's snapshot, check and hashes in one live read (paged/liveread.py);
    (None, why) when it cannot be used and a snapshot must be copied instead.

    `ask_stores` is set by a caller that may contact the stores (the CLI, after its preflight):
    each destination is then asked for its newest backup's manifest first, so one deleted by
    hand costs a copy now rather than a failed upload. Dagster's snapshot stage does not
    contact the stores (their failures belong to the upload stage)."""
    db_path = settings.require_db()
    cache = HashCache(settings.page_hash_cache)
    urls = [safe_url(store.url) for store in stores]
    bases = cache.bases_for(urls, recipients_fingerprint(settings.age_recipients))
    if not bases:
        return None, "not every destination has a backup with these keys cached here"
    landed = cache.landed()
    for store, url in zip(stores if ask_stores else [], urls, strict=False):
        newest = landed[url]["backup_id"]
        try:
            store.get_bytes(manifest_key(settings.name, newest))
        except ObjectNotFound:
            cache.forget_landed(url, frozenset({newest}))
            return None, f"{url} no longer has backup {newest}"
    try:
        read = read_live(
            LiveReadRequest(
                db_path=db_path,
                workdir=staged.workdir,
                backup_id=staged.backup_id,
                cache=cache,
                bases=bases,
                hashes_out=staged.workdir / PAGE_HASHES,
                profile=settings.profile,
                busy_timeout=min(5.0, settings.snapshot_timeout),
                progress=progress,
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
        path=staged.workdir,  # no copy: never the live database's path (nothing may delete it)
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
    info["format"] = "paged"
    info["live_read"] = {
        "bases": read.bases,
        "staged_pages": read.staged_pages,
        "pages_from_wal": read.pages_from_wal,
    }
    staged.write_json(SNAPSHOT_INFO, info)
    staged.write_json(VERIFY_INFO, read.report.record())
    staged.write_bytes(PAGE_HASHES_INFO, read.hashes.to_json())
    return snap, None


def _live_bases(staged: StagedBackup) -> frozenset[str] | None:
    """The bases of a backup read live (its staged pages are only the change from them)."""
    live = staged.read_json(SNAPSHOT_INFO, "snapshot").get("live_read")
    return frozenset(live["bases"]) if isinstance(live, dict) else None


@_in_staging
def stage_verify(staged: StagedBackup, settings: BackupSettings) -> VerifyReport:
    """Check the snapshot; the result is kept beside it so the archive stage can refuse.

    A backup read live was checked during its read (the same transaction): that result."""
    if _live_bases(staged) is not None:
        return VerifyReport.from_record(staged.read_json(VERIFY_INFO, "verify"), staged.workdir)
    report = verify_database(
        staged.snapshot_path, mode=settings.verify_mode, profile=settings.profile
    )
    staged.write_json(VERIFY_INFO, report.record())
    return report


@_in_staging
def stage_archive(
    staged: StagedBackup, settings: BackupSettings, progress: Progress | None = None
) -> tuple[Manifest, float]:
    """Compress (and encrypt) a verified snapshot; write the final manifest beside it."""
    verify = staged.read_json(VERIFY_INFO, "verify")
    if verify.get("result") != "ok":
        raise BackupError(
            f"backup {staged.backup_id}: snapshot failed verification ({verify.get('problems')}); "
            "nothing is archived"
        )
    if staged.backup_format(settings.backup_format) == "paged":
        return _stage_pages(staged, settings, verify, progress)
    recipients = parse_recipients(settings.age_recipients)
    result = write_archive(
        staged.snapshot_path,
        staged.archive_path(bool(recipients)),
        recipients=recipients,
        progress=progress,
    )
    return _write_manifest(staged, verify, result), result.seconds


def _hash_snapshot(
    staged: StagedBackup, progress: Progress | None = None
) -> tuple[PageHashes, float]:
    """The paged format's archive stage: hash every page (packs are made per destination at
    upload, against what that destination already has). A live read hashed them already."""
    if _live_bases(staged) is not None:
        return staged.page_hashes(), 0.0
    started = time.monotonic()
    snap = staged.read_json(SNAPSHOT_INFO, "snapshot")
    page_size = int(snap["page_size"])
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


def _stage_pages(
    staged: StagedBackup,
    settings: BackupSettings,
    verify: dict[str, Any],
    progress: Progress | None,
) -> tuple[Manifest, float]:
    info, seconds = _hash_snapshot(staged, progress)
    return _write_paged_manifest(staged, settings, verify, info), seconds


def _write_paged_manifest(
    staged: StagedBackup, settings: BackupSettings, verify: dict[str, Any], info: PageHashes
) -> Manifest:
    """The draft of a paged manifest: its archive (the page map) and packs are filled in per
    destination by `publish_paged`."""
    encrypted = bool(parse_recipients(settings.age_recipients))
    draft = _manifest_fields(
        staged,
        verify,
        db_sha256=info.db_sha256,
        db_size=info.db_size,
        archive=ArchiveInfo(
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
    return draft


def _write_manifest(
    staged: StagedBackup, verify: dict[str, Any], result: ArchiveResult
) -> Manifest:
    """The final manifest of a verified, archived snapshot, kept beside it for the upload."""
    manifest = _manifest_fields(
        staged,
        verify,
        db_sha256=result.db_sha256,
        db_size=result.db_size,
        archive=ArchiveInfo(
            key=f"{backup_prefix(staged.name, staged.backup_id)}/{result.path.name}",
            size=result.size,
            sha256=result.sha256,
            compression=result.compression,
            encryption=result.encryption,
        ),
    )
    staged.write_bytes(DRAFT_MANIFEST, manifest.to_json())
    return manifest


def _manifest_fields(
    staged: StagedBackup,
    verify: dict[str, Any],
    *,
    db_sha256: str,
    db_size: int,
    archive: ArchiveInfo,
) -> Manifest:
    snap = staged.read_json(SNAPSHOT_INFO, "snapshot")
    return Manifest(
        backup_id=staged.backup_id,
        name=staged.name,
        created_at=str(snap.get("created_at") or rfc3339(backup_id_time(staged.backup_id))),
        db_sha256=db_sha256,
        db_size=db_size,
        page_size=int(verify["page_size"]),
        page_count=int(verify["page_count"]),
        sqlite_version=str(verify["sqlite_version"]),
        archive=archive,
        verify=VerifyInfo(mode=str(verify["mode"]), result="ok", seconds=float(verify["seconds"])),
        tables={str(k): int(v) for k, v in verify["tables"].items()},
        tool_version=__version__,
        source_journal_mode=str(snap.get("journal_mode", "unknown")),
        snapshot_seconds=round(float(snap.get("seconds", 0.0)), 3),
    )


@_in_staging
def verify_and_archive(
    staged: StagedBackup,
    settings: BackupSettings,
    progress: Progress | None = None,
    *,
    durable: bool = True,
) -> tuple[VerifyReport, Manifest | None, float]:
    """`stage_verify` and the archive stage at once: the check runs in a thread while this
    one compresses. The archive is kept only if the check passed; on failure it is deleted
    and the manifest is None (the caller must not upload)."""
    if staged.backup_format(settings.backup_format) == "paged":
        return _verify_and_hash(staged, settings, progress)
    recipients = parse_recipients(settings.age_recipients)
    archive_path = staged.archive_path(bool(recipients))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-verify") as pool:
        checking = pool.submit(stage_verify, staged, settings)
        try:
            result = write_archive(
                staged.snapshot_path,
                archive_path,
                recipients=recipients,
                progress=progress,
                durable=durable,
            )
        except BaseException:
            wait([checking])  # the check reads the snapshot: let it end before cleanup
            raise
        try:
            report = checking.result()
        except BaseException:
            archive_path.unlink(missing_ok=True)
            raise
    if not report.ok:
        archive_path.unlink(missing_ok=True)
        return report, None, result.seconds
    verify = staged.read_json(VERIFY_INFO, "verify")
    return report, _write_manifest(staged, verify, result), result.seconds


def _verify_and_hash(
    staged: StagedBackup, settings: BackupSettings, progress: Progress | None
) -> tuple[VerifyReport, Manifest | None, float]:
    """The paged format's `verify_and_archive`: the check runs beside the page hashing (a
    read in place did both already: their recorded results)."""
    if _live_bases(staged) is not None:
        report = stage_verify(staged, settings)
        info, seconds = _hash_snapshot(staged, progress)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-verify") as pool:
            checking = pool.submit(stage_verify, staged, settings)
            try:
                info, seconds = _hash_snapshot(staged, progress)
            except BaseException:
                wait([checking])
                raise
            report = checking.result()
    if not report.ok:
        return report, None, seconds
    verify = staged.read_json(VERIFY_INFO, "verify")
    return report, _write_paged_manifest(staged, settings, verify, info), seconds


def load_staged_manifest(staged: StagedBackup) -> Manifest:
    path = staged.workdir / DRAFT_MANIFEST
    if not path.exists():
        raise BackupError(
            f"backup {staged.backup_id}: the archive stage has not run; run the whole backup again"
        )
    return Manifest.from_json(path.read_bytes(), where=str(path))


@_in_staging
def stage_upload(
    staged: StagedBackup,
    stores: Sequence[BackupStore],
    *,
    settings: BackupSettings | None = None,
    cleanup: bool = True,
) -> list[UploadOutcome]:
    """Publish to every store; one failing store does not stop the others.

    The staging directory is removed only when every store has the backup, so a failed
    upload can be retried from the same files. A paged backup needs `settings` (its
    encryption keys and the page-hash cache). With `settings.deadline`, the upload's store
    requests give up once it has passed (inside `run_backup`, the backup's own deadline,
    counted from its start, holds when it is the earlier).
    """
    with deadline(settings.deadline if settings is not None else None):
        return _upload(staged, stores, settings, cleanup)


def _upload(
    staged: StagedBackup,
    stores: Sequence[BackupStore],
    settings: BackupSettings | None,
    cleanup: bool,
) -> list[UploadOutcome]:
    manifest = load_staged_manifest(staged)
    if manifest.is_paged:
        if settings is None:
            raise ValueError("a paged backup's upload needs the settings")
        paged = _upload_paged(staged, stores, manifest, settings)
        if cleanup and paged and all(o.ok for o in paged):
            staged.remove()
        return paged
    archive = staged.archive_path(manifest.encrypted)
    if not archive.exists():
        raise BackupError(f"staged archive {archive} is gone; run the whole backup again")
    outcomes: list[UploadOutcome] = []
    for store in stores:
        started = time.monotonic()
        if already_published(store, manifest):
            # A re-run after a partial failure only fills in what is missing.
            outcomes.append(
                UploadOutcome(url=safe_url(store.url), ok=True, requests=1, already_there=True)
            )
            continue
        try:
            stored = publish_backup(store, manifest, archive)
        except BackupError as exc:
            outcomes.append(
                UploadOutcome(
                    url=safe_url(store.url),
                    ok=False,
                    error=str(exc),
                    permanent=isinstance(exc, ConfigError),
                    seconds=time.monotonic() - started,
                )
            )
            continue
        outcomes.append(
            UploadOutcome(
                url=safe_url(store.url),
                ok=True,
                bytes=stored.size,
                seconds=time.monotonic() - started,
                requests=stored.requests,
            )
        )
    if cleanup and outcomes and all(o.ok for o in outcomes):
        staged.remove()
    return outcomes


def _upload_paged(
    staged: StagedBackup,
    stores: Sequence[BackupStore],
    draft: Manifest,
    settings: BackupSettings,
) -> list[UploadOutcome]:
    if recipients_fingerprint(settings.age_recipients) != (draft.paged or {}).get("recipients"):
        raise ConfigError(
            f"backup {draft.backup_id}: KOTOMI_BACKUP_AGE_RECIPIENTS changed since its archive "
            "stage; run the whole backup again"
        )
    recipients = parse_recipients(settings.age_recipients)
    bases = _live_bases(staged)
    pages = staged.workdir / DELTA if bases is not None else staged.snapshot_path
    needed = (staged.workdir / PAGE_HASHES, staged.workdir / PAGE_HASHES_INFO, pages)
    if not all(path.exists() for path in needed):
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
    try:
        return _publish_each(staged, stores, draft, settings, recipients, info, source, bases)
    finally:
        source.close()


def _publish_each(
    staged: StagedBackup,
    stores: Sequence[BackupStore],
    draft: Manifest,
    settings: BackupSettings,
    recipients: Sequence[Any],
    info: PageHashes,
    source: PageSource,
    bases: frozenset[str] | None,
) -> list[UploadOutcome]:
    hashes = staged.workdir / PAGE_HASHES
    cache = HashCache(settings.page_hash_cache)
    outcomes: list[UploadOutcome] = []
    for store in stores:
        started = time.monotonic()
        url = safe_url(store.url)
        try:
            if already_published(store, draft):
                outcomes.append(UploadOutcome(url=url, ok=True, requests=1, already_there=True))
                continue
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
        except BackupError as exc:
            if isinstance(exc, MissingBase):
                cache.forget_landed(url, bases or frozenset())  # the next backup copies
            outcomes.append(
                UploadOutcome(
                    url=url,
                    ok=False,
                    error=str(exc),
                    permanent=isinstance(exc, ConfigError),
                    seconds=time.monotonic() - started,
                )
            )
            continue
        cache.remember(info, hashes)  # the next backup to this store builds on this one
        cache.mark_landed(url, draft.backup_id, (draft.paged or {}).get("recipients", ""))
        outcomes.append(
            UploadOutcome(
                url=url,
                ok=True,
                bytes=done.stored_bytes,
                seconds=time.monotonic() - started,
                requests=done.requests,
                manifest=done.manifest,
            )
        )
    return outcomes


def run_backup(settings: BackupSettings, progress: Progress | None = None) -> BackupResult:
    """The whole pipeline, as the CLI runs it. Raises on the first failed stage; a
    destination's configuration problem (credentials, bucket, permissions) is a ConfigError
    wherever it was met. `settings.deadline` counts from here: no store request of this
    backup waits past it."""
    with deadline(settings.deadline):
        return _run_backup(settings, progress)


def _run_backup(settings: BackupSettings, progress: Progress | None) -> BackupResult:
    stores = preflight(settings)
    # Staging files live only as long as this call: no fsync (the stores' copies are durable).
    # Held all along: a folder of this process is garbage once it is gone (staging.py).
    staged, snap = stage_snapshot(
        settings, durable=False, stores=stores, ask_stores=True, progress=progress, hold=True
    )
    try:
        report, manifest, archive_seconds = verify_and_archive(
            staged, settings, progress, durable=False
        )
        if manifest is None:
            raise BackupError(f"verification failed, nothing uploaded: {report.summary()}")
        outcomes = stage_upload(staged, stores, settings=settings)
    finally:
        staged.remove()
    failed = [o for o in outcomes if not o.ok]
    if failed:
        message = without_repeated_prefix(
            "; ".join(f"upload to {o.url} failed: {o.error}" for o in failed)
        )
        # Credentials, a missing bucket, a denied write: no retry helps, whenever it is met.
        raise (ConfigError if any(o.permanent for o in failed) else BackupError)(message)
    written = [o.manifest for o in outcomes if o.manifest is not None]
    return BackupResult(
        manifest=written[0] if written else manifest,
        snapshot=snap,
        verify=report,
        outcomes=outcomes,
        archive_seconds=archive_seconds,
    )
