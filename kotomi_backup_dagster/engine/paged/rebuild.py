"""Rebuilding the exact database file of a paged backup from its page map and packs.

Every pack the page map names is streamed once (two at a time: decompression and writes run
without the GIL) and its pages are written where the map puts them; each pack's size and
sha256 are checked against the manifest, and the whole file's sha256 at the end. The result
appears at `dest` only when all of that matched.

The manifest is untrusted input: its size must be its page count times its page size, and
fit the disk, before the file is made; a write that finds the disk full is a `DiskFull`
(never reported as damage); an interrupt stops the workers and removes the partial file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..archive import Progress
from ..errors import BackupError, ConfigError
from ..fsutil import fsync_dir, no_space_is_disk_full, private_dir, pwrite_all, require_room
from ..manifest import Manifest
from ..stores import BackupStore
from .packs import pack_key, read_stored_pack
from .publish import load_page_map

Segment = tuple[int, int, int]  # first_entry, count, first_page
HASH_BLOCK = 1 << 20
WORKERS = 2


def rebuild_database(
    store: BackupStore,
    manifest: Manifest,
    dest: Path,
    *,
    identities: Sequence[Any] = (),
    progress: Progress | None = None,
    durable: bool = True,
) -> Path:
    """Rebuild `manifest`'s database at `dest`; `durable=False` leaves the fsync of the file
    to the caller (a restore overlaps it with its check)."""
    if manifest.db_size != manifest.page_count * manifest.page_size:
        raise BackupError(
            f"backup {manifest.backup_id}: manifest size {manifest.db_size} is not its "
            f"{manifest.page_count} pages of {manifest.page_size} bytes (damaged or tampered); "
            "nothing restored"
        )
    require_room(dest.parent, manifest.db_size)
    page_map = load_page_map(store, manifest)
    infos = manifest.pack_files()
    segments: dict[str, list[Segment]] = {}
    for run in page_map.iter_runs():
        segments.setdefault(page_map.packs[run.pack], []).append(
            (run.first_entry, run.count, run.first_page)
        )
    lock = threading.Lock()
    stop = threading.Event()  # set when the rebuild is abandoned: the workers end at once

    def report(n: int) -> None:
        if stop.is_set():
            raise _Stopped
        if progress:
            with lock:
                progress(n)

    private_dir(dest.parent, tighten=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with no_space_is_disk_full(dest.parent, manifest.db_size):
            os.ftruncate(fd, manifest.db_size)
            jobs = [
                (pack, infos[pack], sorted(segs), page_map.page_size)
                for pack, segs in segments.items()
            ]
            _place_packs(store, manifest, jobs, fd, identities, report, stop)
            if durable:
                os.fsync(fd)
            digest, size = _file_sha256(fd)
        if digest != manifest.db_sha256 or size != manifest.db_size:
            raise BackupError(
                f"backup {manifest.backup_id}: rebuilt database sha256 differs from the "
                "manifest; nothing restored"
            )
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(dest.parent)
    return dest


class _Stopped(Exception):
    """Raised in a worker once the rebuild is abandoned (an interrupt, another failure)."""


PackJob = tuple[str, dict[str, Any], list[Segment], int]  # pack, its info, segments, page size


def _place_packs(
    store: BackupStore,
    manifest: Manifest,
    jobs: list[PackJob],
    fd: int,
    identities: Sequence[Any],
    report: Progress,
    stop: threading.Event,
) -> None:
    """Every pack placed, two at a time; on any failure (an interrupt included) the other
    workers stop at their next block and are waited for before this returns."""
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kotomi-rebuild")
    try:
        futures = [
            pool.submit(_place_pack, store, manifest, *job[:3], fd, job[3], identities, report)
            for job in jobs
        ]
        for future in futures:
            future.result()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _place_pack(
    store: BackupStore,
    manifest: Manifest,
    pack: str,
    info: dict[str, Any],
    segments: list[Segment],
    fd: int,
    page_size: int,
    identities: Sequence[Any],
    report: Progress,
) -> None:
    pending = iter(segments)
    upcoming = next(pending, None)
    active: list[Segment] = []

    def place(offset: int, data: memoryview) -> None:
        nonlocal upcoming
        end = offset + len(data)
        while upcoming is not None and upcoming[0] * page_size < end:
            active.append(upcoming)
            upcoming = next(pending, None)
        still = []
        for first_entry, count, first_page in active:
            start = first_entry * page_size
            stop = start + count * page_size
            a, b = max(start, offset), min(stop, end)
            if a < b:
                pwrite_all(fd, data[a - offset : b - offset], first_page * page_size + a - start)
            if stop > end:
                still.append((first_entry, count, first_page))
        active[:] = still
        report(len(data))

    try:
        result = read_stored_pack(
            store,
            manifest.name,
            pack,
            info,
            place,
            identities,
            version=manifest.version_of(pack_key(manifest.name, pack)),
        )
    except ConfigError:
        raise
    except BackupError as exc:
        raise BackupError(f"backup {manifest.backup_id}: {exc}; nothing restored") from exc
    if upcoming is not None or active or result.raw_bytes != int(info["pages"]) * page_size:
        raise BackupError(
            f"backup {manifest.backup_id}: pack {pack} holds fewer pages than the page map "
            "needs; nothing restored"
        )


def _file_sha256(fd: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, HASH_BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest(), offset
