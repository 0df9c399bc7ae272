"""One backup in four stages, each leaving its result in a staging directory:

    snapshot -> verify -> archive (compress + encrypt, or hash pages) -> upload (manifest last)

This module only sequences the stages: what differs between a full and a paged backup is the
format's (engine/formats/), chosen once at the snapshot and recorded in the staging folder
(engine/staging.py), which every later stage follows. Stages hand over files, not memory, so
any stage can be re-run alone (Dagster's "re-execute from failure" re-runs only the upload
after a failed upload). The CLI runs all four with `run_backup`, which overlaps verification
with the archive's work (two cores: SQLite's check and zstd or hashing both run without the
GIL, both reading the snapshot from the page cache) and skips the fsyncs of its transient
staging files; nothing is uploaded unless the check passed.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

from .archive import Progress, parse_recipients
from .destinations import what_to_check
from .errors import BackupError, ConfigError, without_repeated_prefix
from .formats import BackupFormat, Publish, format_named, staged_format
from .fsutil import no_space_is_disk_full
from .manifest import Manifest, new_backup_id, rfc3339
from .priority import live_database_reads, read_ceiling
from .readable import readable_size
from .settings import BackupSettings
from .snapshot import Snapshot, check_source, take_snapshot
from .staging import (
    DRAFT_MANIFEST,
    SNAPSHOT_INFO,
    STALE_STAGING_SECONDS,
    VERIFY_INFO,
    StagedBackup,
    StagingArea,
)
from .stores import BackupStore, deadline, open_store, safe_url
from .stores.retry import NOT_STORED, UPLOAD_AGAIN
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
    "upload_failure",
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
    # The manifest written there (each destination records its own versions, and a paged
    # backup its own packs).
    manifest: Manifest | None = None


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    snapshot: Snapshot
    verify: VerifyReport
    outcomes: list[UploadOutcome]
    archive_seconds: float


# Each destination's upload, for whoever watches (defs/engine_log.py: the step's event log).
log = logging.getLogger(__name__)

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
            try:
                store.preflight()
            except BackupError as exc:
                # A transient failure's line says what failed; add what to check first.
                check = what_to_check(str(exc), store.url) if type(exc) is BackupError else None
                if check is None:
                    raise
                raise BackupError(f"{exc}; {check}, then run the backup again") from exc
    return stores


def stage_snapshot(
    settings: BackupSettings,
    now: datetime | None = None,
    *,
    durable: bool = True,
    stores: Sequence[BackupStore] | None = None,
    contact_stores: bool = False,
    progress: Progress | None = None,
    hold: bool = False,
) -> tuple[StagedBackup, Snapshot]:
    """Take the snapshot into a new staging directory (staging.py).

    `durable=False` (the CLI's one-process run) skips its fsync (see `take_snapshot`) and
    marks nothing for re-execution: once this process is gone its folder is garbage. A
    durable one is kept for re-execution, and only the newest `settings.keep_staged` such
    backups stay (the older ones' ids, and those dropped for room, are in
    `Snapshot.dropped_staging`). With `hold` the folder stays locked for the caller (who ends
    with `staged.remove()` or `staged.release()`). A failed snapshot leaves no folder. The
    format may take the snapshot its own way (`BackupFormat.take`: a paged backup whose every
    destination has a backup cached here reads the live database in place: no copy, and its
    check and hashes are done there too). `stores` are the preflight's (else opened here);
    with `contact_stores` the format may ask them (a paged backup asks each for its newest
    backup before reading in place).
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
            snap = _take(staged, settings, moment, stores, contact_stores, progress, durable)
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
    contact_stores: bool,
    progress: Progress | None,
    durable: bool,
) -> Snapshot:
    """The format's own snapshot (a paged backup reads in place), else the plain copy."""
    fmt = format_named(settings.backup_format)
    stores = list(stores) if stores is not None else [open_store(u) for u in settings.urls]
    own, fallback = fmt.take(staged, settings, moment, stores, contact_stores, progress, durable)
    if own is not None:
        return own
    with live_database_reads():
        snap = take_snapshot(
            settings.require_db(),
            staged.snapshot_path,
            deadline_seconds=settings.snapshot_timeout,
            durable=durable,
            ceiling=read_ceiling(settings.read_mbps),
        )
    info = asdict(snap)
    info["created_at"] = rfc3339(moment)
    info["format"] = fmt.name  # decided here, once: later stages read it
    if fallback:
        info["live_read_unavailable"] = fallback  # why the database was copied instead
    staged.write_json(SNAPSHOT_INFO, info)
    return snap


@_in_staging
def stage_verify(staged: StagedBackup, settings: BackupSettings) -> VerifyReport:
    """Check the snapshot; the result is kept beside it so the archive stage can refuse.

    A backup read in place was checked during its read (the same transaction): that result."""
    if staged_format(staged, settings).checked_at_snapshot(staged):
        return staged.verify_report()
    report = verify_database(
        staged.snapshot_path, mode=settings.verify_mode, profile=settings.profile
    )
    staged.write_json(VERIFY_INFO, report.record())
    return report


@_in_staging
def stage_archive(
    staged: StagedBackup, settings: BackupSettings, progress: Progress | None = None
) -> tuple[Manifest, float]:
    """The format's archive work on a verified snapshot; the draft manifest is kept beside
    it for the upload."""
    verify = staged.verify_report()
    if not verify.ok:
        raise BackupError(
            f"backup {staged.backup_id}: snapshot failed verification ({verify.problems}); "
            "nothing is archived"
        )
    _, prepared = staged_format(staged, settings).prepare(
        staged, settings, lambda: verify, progress, durable=True
    )
    assert prepared.manifest is not None  # the check passed
    return prepared.manifest, prepared.seconds


@_in_staging
def verify_and_archive(
    staged: StagedBackup,
    settings: BackupSettings,
    progress: Progress | None = None,
    *,
    durable: bool = True,
) -> tuple[VerifyReport, Manifest | None, float]:
    """`stage_verify` and the archive stage at once: the check runs in a thread beside the
    format's work. The manifest is None when the check failed (the caller must not upload)."""
    report, prepared = staged_format(staged, settings).prepare(
        staged, settings, lambda: stage_verify(staged, settings), progress, durable
    )
    return report, prepared.manifest, prepared.seconds


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
    draft = load_staged_manifest(staged)
    if settings is None:
        if draft.is_paged:
            raise ValueError("a paged backup's upload needs the settings")
        settings = BackupSettings(name=staged.name)  # a full backup's upload needs nothing else
    fmt = format_named(draft.kind)
    with fmt.publisher(staged, draft, settings) as publish:
        outcomes = [_publish_to(store, draft, fmt, publish) for store in stores]
    if cleanup and outcomes and all(o.ok for o in outcomes):
        staged.remove()
    return outcomes


def _publish_to(
    store: BackupStore, draft: Manifest, fmt: BackupFormat, publish: Publish
) -> UploadOutcome:
    """One destination: already there (a re-run only fills in what is missing), stored, or
    failed with one line; a failing destination never stops the others."""
    started = time.monotonic()
    url = safe_url(store.url)
    if fmt.published(store, draft):
        log.info("%s: backup %s is there already", url, draft.backup_id)
        return UploadOutcome(url=url, ok=True, requests=1, already_there=True)
    what = "the pages it lacks" if draft.is_paged else readable_size(draft.archive.size)
    log.info("%s: uploading backup %s (%s)", url, draft.backup_id, what)
    try:
        done = publish(store)
    except BackupError as exc:
        return UploadOutcome(
            url=url,
            ok=False,
            error=str(exc),
            permanent=isinstance(exc, ConfigError),
            seconds=time.monotonic() - started,
        )
    seconds = time.monotonic() - started
    log.info(
        "%s: backup %s stored, %s in %d requests, %.1f s",
        url,
        draft.backup_id,
        readable_size(done.bytes),
        done.requests,
        seconds,
    )
    return UploadOutcome(
        url=url,
        ok=True,
        bytes=done.bytes,
        seconds=seconds,
        requests=done.requests,
        manifest=done.manifest,
    )


# A store's failed write ends with its generic next step (stores/retry.py: upload_hint, and
# the paged publisher's own lines); `upload_failure` says what fits its caller instead.
_GENERIC_NEXT_STEP = re.compile(rf"[;,:]\s*(?:{NOT_STORED}[,:]\s*)?{UPLOAD_AGAIN}\s*$")


def upload_failure(
    name: str,
    failed: Sequence[UploadOutcome],
    *,
    then: str,
    after: str = "",
    check: bool = True,
) -> str:
    """One line for an upload that did not reach every destination, worded alike by the CLI
    and Dagster: each destination once, with its cause; that the backup is not stored there
    (`after`: " yet", " after 3 attempts"); what to check, from the causes (unless `check` is
    off); then `then`, what the caller does next ("run the backup again")."""
    causes = "; ".join(
        f"upload of {name} to {o.url} failed: {_GENERIC_NEXT_STEP.sub('', o.error or 'failed')}"
        for o in failed
    )
    transient = [o for o in failed if not o.permanent] if check else []
    found = list(dict.fromkeys(c for o in transient if (c := what_to_check(o.error or "", o.url))))
    if found:
        next_step = f"{'; '.join(found)}, then {then}"
    elif check and any(o.permanent for o in failed):
        next_step = f"once that is fixed, {then}"  # the store's own line says what to fix
    else:
        next_step = then
    return without_repeated_prefix(f"{causes}; {NOT_STORED}{after}: {next_step}")


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
        settings, durable=False, stores=stores, contact_stores=True, progress=progress, hold=True
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
        # The staging folder goes with this process: the whole backup runs again.
        message = upload_failure(settings.name, failed, then="run the backup again")
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
