"""The pages of a live WAL database, read in place under one read transaction.

A paged backup needs every page's hash but stores only the changed pages, so copying the
whole database first (`take_snapshot`) would cost more than the rest of the backup. Instead,
a connection opens a read transaction and the pages of exactly its snapshot are read from the
files: the database file, overlaid with the newest WAL frame of each page up to the
snapshot's last frame. SQLite's WAL rules make that stable while the transaction is open:

- a checkpoint copies into the database file only frames at or below the oldest reader's
  mark, so a page with no frame in our range is never written while we read it;
- the WAL restarts (frames overwritten from the start) only when no reader holds a mark
  above 0, and a reader gets mark 0 only when every frame is already in the database file.
  When the WAL index says so after the transaction began (nBackfill = last frame), the file
  alone is the snapshot; otherwise the frames are read, and a restart that rewrote them would
  have rewritten the WAL header first, which is read again at the end.

Which frames belong to the snapshot is read from the WAL index (the -shm file): its header is
read before and after the transaction starts, and used only when both reads are identical
(the header changes with every commit). The image is then checked against the connection
(page count, schema cookie, freelist count) and the WAL header is read again at the end.
Anything unexpected raises `LiveReadUnavailable`, and the caller copies a snapshot instead.

The check (`quick_check`) runs on `LivePages.conn`, inside the same transaction: SQLite checks
its own view of the snapshot whose pages are read here, and the cross-checks above tie the two
(tests/engine/paged/test_livepages.py compares every image with SQLite's view under concurrent
writes, checkpoints and VACUUM). Page 1 of the image is marked as a rollback-journal database,
as `take_snapshot` leaves its copies: a restored file is one self-contained file.

POSIX locks belong to the process: closing any descriptor of a file drops every lock this
process holds on it, including those of SQLite connections. The files are therefore opened
once per process and kept open (`fsutil.held_fd`), never closed under a connection.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..fsutil import held_fd
from ..snapshot import checkpoint_after_read, sqlite_uri

SHM_HEADER = struct.Struct("=IIIBBHIIIIIIII")  # WalIndexHdr, native byte order
SHM_HEADER_SIZE = 48
CKPT_NBACKFILL = 2 * SHM_HEADER_SIZE  # WalCkptInfo.nBackfill follows the two header copies
WAL_HEADER_SIZE = 32
FRAME_HEADER = struct.Struct(">II8s")  # page number, db size after commit (0 if not), salts
FRAME_HEADER_SIZE = 24
WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_VERSION = 3007000  # of the WAL file format and of the WAL index header
BLOCK_PAGES = 256
ATTEMPTS = 50


class LiveReadUnavailable(Exception):
    """The database cannot be read in place (not WAL, no WAL index, busy): copy it instead."""


class LiveReadChanged(LiveReadUnavailable):
    """The WAL was rewritten while it was read: the pages read are not one snapshot."""


class LivePages:
    """One read transaction on a live database and the pages of exactly its snapshot."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        db_fd: int,
        wal_fd: int | None,
        page_size: int,
        page_count: int,
        overlay: dict[int, int],
        wal_header: bytes,
        expected: tuple[int, int],
    ) -> None:
        self.conn = conn
        self.page_size = page_size
        self.page_count = page_count
        self.overlaid_pages = len(overlay)  # pages whose newest version is in the WAL
        self._db_fd = db_fd
        self._wal_fd = wal_fd
        self._overlay = overlay  # page index (0-based) -> file offset of its newest frame data
        self._wal_header = wal_header
        self._page1 = b""
        self._expected = expected  # the connection's schema cookie and freelist count

    @property
    def size(self) -> int:
        return self.page_count * self.page_size

    def blocks(self, block_pages: int = BLOCK_PAGES) -> Iterator[bytes]:
        """The database image, page 1 first, in blocks of whole pages."""
        size = self.page_size
        for first in range(0, self.page_count, block_pages):
            count = min(block_pages, self.page_count - first)
            block = os.pread(self._db_fd, count * size, first * size)
            short = len(block) // size
            if any(p not in self._overlay for p in range(first + short, first + count)):
                raise LiveReadUnavailable(
                    "the database file is shorter than its snapshot and the WAL lacks the "
                    "missing pages"
                )
            patched = [p for p in range(first, first + count) if p in self._overlay]
            if patched or short < count or first == 0:
                data = bytearray(block.ljust(count * size, b"\0"))
                for page in patched:
                    data[(page - first) * size : (page - first + 1) * size] = self._frame(page)
                if first == 0:
                    data[18:20] = b"\x01\x01"  # rollback journal: a self-contained file
                    self._page1 = bytes(data[:size])
                block = bytes(data)
            yield block

    def confirm(self) -> None:
        """After `blocks()`: the image matches the connection and no WAL frame was rewritten."""
        if self._wal_fd is not None and self._overlay:
            now = os.pread(self._wal_fd, WAL_HEADER_SIZE, 0)
            if now != self._wal_header:
                raise LiveReadChanged("the WAL was restarted while it was read")
        if not self._page1:
            raise LiveReadUnavailable("page 1 was not read")
        freelist, cookie = struct.unpack(">II", self._page1[36:44])
        if (cookie, freelist) != self._expected:
            raise LiveReadUnavailable("page 1 read from the files differs from SQLite's view")

    def _frame(self, page: int) -> bytes:
        assert self._wal_fd is not None
        data = os.pread(self._wal_fd, self.page_size, self._overlay[page])
        if len(data) != self.page_size:
            raise LiveReadChanged("the WAL was truncated while it was read")
        return data


@contextmanager
def open_live_pages(
    db_path: Path, *, busy_timeout: float = 5.0, attempts: int = ATTEMPTS
) -> Iterator[LivePages]:
    """A read transaction on `db_path` and its pages; raises `LiveReadUnavailable` when the
    database is not in WAL mode or its WAL index cannot be pinned to the transaction."""
    db_fd = _held_fd(db_path)
    try:
        conn = sqlite3.connect(
            sqlite_uri(db_path, "mode=rw"),
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # the check runs in a thread while this one reads
        )
    except sqlite3.Error as exc:
        raise LiveReadUnavailable(f"cannot open: {exc}") from exc
    try:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                raise LiveReadUnavailable(f"journal mode is {mode}, not wal")
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            live = _begin(conn, db_path, db_fd, page_size, attempts)
        except sqlite3.Error as exc:
            raise LiveReadUnavailable(f"cannot start a read transaction: {exc}") from exc
        try:
            yield live
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            checkpoint_after_read(conn)  # what the read held back, not in Kotomi's next commit
    finally:
        conn.close()


def _begin(
    conn: sqlite3.Connection, db_path: Path, db_fd: int, page_size: int, attempts: int
) -> LivePages:
    shm_path = Path(f"{db_path}-shm")
    if not shm_path.exists():
        raise LiveReadUnavailable("no WAL index (-shm) beside the database")
    shm_fd = _held_fd(shm_path)
    last = "the WAL index kept changing (writes at every attempt)"
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.001 * 2**attempt, 0.05))  # let the writer finish its commit
        before = _shm_header(shm_fd)
        if before is None:
            continue  # read while a writer updated it
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # takes the read lock
        # Unchanged around the start (the header changes with every commit): the snapshot is
        # the one this header describes.
        if before == _shm_header(shm_fd):
            try:
                return _pin(conn, db_path, db_fd, shm_fd, page_size, before)
            except LiveReadChanged as exc:
                last = str(exc)
        conn.execute("COMMIT")
    raise LiveReadUnavailable(last)


def _pin(
    conn: sqlite3.Connection,
    db_path: Path,
    db_fd: int,
    shm_fd: int,
    page_size: int,
    header: bytes,
) -> LivePages:
    """The pages of the transaction `conn` holds, whose WAL index header is `header`."""
    fields = SHM_HEADER.unpack(header)
    version, is_init, sz_page, mx_frame = fields[0], fields[3], fields[5], fields[6]
    salts = header[32:40]
    page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
    on_disk, opened = os.stat(db_path), os.fstat(db_fd)
    if (on_disk.st_dev, on_disk.st_ino) != (opened.st_dev, opened.st_ino):
        raise LiveReadUnavailable("the database file was replaced while it was opened")
    expected = (
        int(conn.execute("PRAGMA schema_version").fetchone()[0]),
        int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
    )
    if not is_init or version != WAL_VERSION:
        raise LiveReadUnavailable("the WAL index is not initialised or of another version")
    (backfilled,) = struct.unpack("=I", os.pread(shm_fd, 4, CKPT_NBACKFILL))
    if mx_frame == 0 or backfilled >= mx_frame:
        # Every frame of the snapshot is already in the database file: read the file alone.
        return LivePages(conn, db_fd, None, page_size, page_count, {}, b"", expected)
    if (sz_page & 0xFF00) | ((sz_page & 0x0001) << 16) != page_size or fields[7] != page_count:
        raise LiveReadUnavailable("the WAL index describes another page size or page count")
    wal_fd = _held_fd(Path(f"{db_path}-wal"))
    # A reader holding mark 0 does not stop a WAL restart, and a checkpoint may have finished
    # (nBackfill reset by a restart) between the start and the read of nBackfill above: a
    # restarted WAL has new salts, which `_index_frames` and `confirm` check.
    wal_header, overlay = _index_frames(wal_fd, page_size, mx_frame, salts, page_count)
    return LivePages(conn, db_fd, wal_fd, page_size, page_count, overlay, wal_header, expected)


def _shm_header(shm_fd: int) -> bytes | None:
    """The WAL index header, when both of its copies agree (a writer updates them in turn)."""
    raw = os.pread(shm_fd, 2 * SHM_HEADER_SIZE, 0)
    first, second = raw[:SHM_HEADER_SIZE], raw[SHM_HEADER_SIZE:]
    return first if len(raw) == 2 * SHM_HEADER_SIZE and first == second else None


def _index_frames(
    wal_fd: int, page_size: int, mx_frame: int, salts: bytes, page_count: int
) -> tuple[bytes, dict[int, int]]:
    """Page index -> offset of the newest frame's data, over frames 1..mx_frame, each checked
    to belong to this WAL generation; the last one must commit `page_count` pages."""
    header = os.pread(wal_fd, WAL_HEADER_SIZE, 0)
    if len(header) != WAL_HEADER_SIZE or header[16:24] != salts:
        raise LiveReadChanged("the WAL header does not match the WAL index (restarted)")
    magic, version, wal_page_size = struct.unpack(">III", header[:12])
    if magic not in WAL_MAGIC or version != WAL_VERSION or wal_page_size != page_size:
        raise LiveReadUnavailable("the WAL header does not describe this database")
    frame_size = FRAME_HEADER_SIZE + page_size
    overlay: dict[int, int] = {}
    commit_size = 0
    # Only the frame headers are read here; a page is read when its block is.
    for offset in range(WAL_HEADER_SIZE, WAL_HEADER_SIZE + mx_frame * frame_size, frame_size):
        raw = os.pread(wal_fd, FRAME_HEADER_SIZE, offset)
        if len(raw) != FRAME_HEADER_SIZE:
            raise LiveReadChanged("the WAL is shorter than its index says (truncated)")
        page, commit_size, frame_salts = FRAME_HEADER.unpack_from(raw)
        if frame_salts != salts or page == 0:
            raise LiveReadChanged("a WAL frame does not belong to the indexed WAL")
        if page <= page_count:
            overlay[page - 1] = offset + FRAME_HEADER_SIZE
    if commit_size != page_count:
        raise LiveReadUnavailable("the WAL's last indexed frame does not commit the snapshot")
    return header, overlay


def _held_fd(path: Path) -> int:
    try:
        return held_fd(path)
    except OSError as exc:
        raise LiveReadUnavailable(f"cannot open {path.name}: {exc.strerror}") from exc
