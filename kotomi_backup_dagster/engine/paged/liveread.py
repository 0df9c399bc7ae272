"""A paged backup's snapshot, check and hashes in one pass over the live database.

Under one read transaction (livepages.py) this thread hashes every page and keeps the pages
that changed from the bases (delta.py) while a second thread runs `quick_check` and counts rows
on the same transaction. Nothing the size of the database is written: the cost is one read of
it, the hashes and the check, which run side by side on two cores.

Under a read ceiling (`KOTOMI_BACKUP_READ_MBPS`, engine/priority.py) the pages are read no
faster than it allows, and the check runs after them, in the same transaction: SQLite's
reads cannot be paced from here, and once the pages were read they come from the page cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..archive import Progress
from ..priority import ReadCeiling
from ..verify import Profile, VerifyReport, verify_connection
from .delta import DeltaWriter
from .hashes import HashCache, PageHashes, hash_blocks
from .livepages import LiveReadChanged, LiveReadUnavailable, open_live_pages

__all__ = ["LiveRead", "LiveReadRequest", "LiveReadUnavailable", "read_live"]


@dataclass(frozen=True)
class LiveRead:
    hashes: PageHashes
    report: VerifyReport
    bases: list[str]  # the cached backups the staged pages are the change from
    staged_pages: int
    pages_from_wal: int
    seconds: float


@dataclass(frozen=True)
class LiveReadRequest:
    db_path: Path
    workdir: Path  # where the changed pages are staged (delta.py)
    backup_id: str
    cache: HashCache
    bases: Sequence[PageHashes]  # each destination's newest backup, cached here
    hashes_out: Path
    profile: Profile
    busy_timeout: float
    progress: Progress | None = None
    ceiling: ReadCeiling | None = None


def read_live(request: LiveReadRequest) -> LiveRead:
    """Raises `LiveReadUnavailable` when the database cannot be read in place (the caller
    copies a snapshot instead); a WAL restarted during the read is retried once."""
    try:
        return _read_once(request)
    except LiveReadChanged:
        return _read_once(request)


def _read_once(request: LiveReadRequest) -> LiveRead:
    db_path, bases, cache = request.db_path, request.bases, request.cache
    started = time.monotonic()
    with open_live_pages(db_path, busy_timeout=request.busy_timeout) as live:
        # Every destination's base must be usable, or that destination could not be served.
        files = [cache.load(b) if b.page_size == live.page_size else None for b in bases]
        usable = [f for f in files if f is not None]
        if not bases or len(usable) != len(bases):
            raise LiveReadUnavailable("a cached base is damaged or has another page size")
        delta = DeltaWriter(request.workdir, live.page_size, usable)
        blocks = live.blocks()
        if request.ceiling is not None:
            try:
                db_sha256, db_size, hashes_sha256 = hash_blocks(
                    _paced(blocks, request.ceiling),
                    live.page_size,
                    request.hashes_out,
                    request.progress,
                    delta.keep,
                )
            finally:
                delta.close()
            report = verify_connection(live.conn, label=db_path, profile=request.profile)
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-verify") as pool:
                checking = pool.submit(
                    verify_connection, live.conn, label=db_path, profile=request.profile
                )
                try:
                    db_sha256, db_size, hashes_sha256 = hash_blocks(
                        blocks, live.page_size, request.hashes_out, request.progress, delta.keep
                    )
                except BaseException:
                    live.conn.interrupt()  # the check uses the transaction: end it first
                    wait([checking])
                    raise
                finally:
                    delta.close()
                report = checking.result()
        live.confirm()
        if report.page_count != live.page_count:
            raise LiveReadUnavailable("the check saw another page count than was read")
        hashes = PageHashes(
            backup_id=request.backup_id,
            db_sha256=db_sha256,
            db_size=db_size,
            page_size=live.page_size,
            page_count=live.page_count,
            hashes_sha256=hashes_sha256,
        )
        return LiveRead(
            hashes=hashes,
            report=report,
            bases=[b.backup_id for b in bases],
            staged_pages=delta.kept,
            pages_from_wal=live.overlaid_pages,
            seconds=time.monotonic() - started,
        )


def _paced(blocks: Iterable[bytes], ceiling: ReadCeiling) -> Iterator[bytes]:
    """The blocks, each read only once the ceiling let the one before it through."""
    for block in blocks:
        ceiling.take(len(block))
        yield block
