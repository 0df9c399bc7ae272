"""Page hashes: the sha256 of every page of a snapshot, and the local cache of recent ones.

A paged backup stores only the pages whose hash differs from the same page of its base (the
destination's previous backup). The base's hashes come from a local cache beside the staging
directory, written when that backup landed: the store never holds page hashes, so an
encrypted destination leaks nothing and a backup never needs the decryption key. Without a
usable cache entry (a new machine, a wiped cache) a backup simply stores every page again.

A hashes file is the 32-byte digests back to back, page 0 first; its sidecar JSON says which
snapshot they describe (backup id, database sha256, page size) and holds the file's own
sha256, so a damaged cache entry is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..archive import Progress
from ..fsutil import PRIVATE_FILE, atomic_write_bytes, open_private, private_dir
from ..manifest import is_backup_id

DIGEST = 32
GROUP = 8 * DIGEST
READ_BLOCK = 1 << 20
KEEP_ENTRIES = 3  # the newest few: one per destination whose latest backup differs
LANDED = "landed.json"


@dataclass(frozen=True)
class PageHashes:
    backup_id: str
    db_sha256: str
    db_size: int
    page_size: int
    page_count: int
    hashes_sha256: str

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()


def hash_pages(
    snapshot: Path, page_size: int, out: Path, progress: Progress | None = None
) -> tuple[str, int, str]:
    """Write every page's sha256 of a snapshot file to `out` (see `hash_blocks`)."""
    with snapshot.open("rb", buffering=0) as src:
        blocks = iter(lambda: src.read(READ_BLOCK), b"")
        return hash_blocks(blocks, page_size, out, progress)


def hash_blocks(
    blocks: Iterable[bytes],
    page_size: int,
    out: Path,
    progress: Progress | None = None,
    keep: Callable[[int, bytes, bytes], None] | None = None,
) -> tuple[str, int, str]:
    """Write every page's sha256 to `out`; returns (db sha256, db size, hashes sha256).

    `blocks` are whole pages, in order. The whole-file sha256 is taken by a second thread from
    the same blocks (hashlib releases the GIL), so the two hashes share the cores with the
    verification that runs beside this. `keep(first page, block, digests)` sees each block
    with its pages' digests (the live read keeps the changed pages with it).
    """
    of_hashes = hashlib.sha256()
    size = 0
    sha256 = hashlib.sha256
    with _WholeFileHasher() as whole, open_private(out) as dst:
        for block in blocks:
            if len(block) % page_size:
                raise ValueError(f"{size + len(block)} bytes is not a whole number of pages")
            whole.update(block)
            view = memoryview(block)
            digests = b"".join(
                [sha256(view[i : i + page_size]).digest() for i in range(0, len(block), page_size)]
            )
            of_hashes.update(digests)
            dst.write(digests)
            if keep is not None:
                keep(size // page_size, block, digests)
            size += len(block)
            if progress:
                progress(len(block))
    return whole.hexdigest(), size, of_hashes.hexdigest()


class _WholeFileHasher:
    """sha256 of a stream of blocks, computed in its own thread; at most 8 blocks wait."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="kotomi-sha256", daemon=True)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._digest.update(block)

    def update(self, block: bytes) -> None:
        self._queue.put(block)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> _WholeFileHasher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()


def iter_hashes(path: Path) -> Iterator[bytes]:
    """The digests of a hashes file, in page order, read in blocks."""
    with path.open("rb") as fh:
        while block := fh.read(READ_BLOCK - READ_BLOCK % DIGEST):
            for i in range(0, len(block), DIGEST):
                yield block[i : i + DIGEST]


def changed_pages(new: Path, base: Path | None) -> Iterator[tuple[int, bytes]]:
    """(page, new digest) of each page whose hash differs from the base's same page (every
    page when there is no base)."""
    with new.open("rb") as fresh:
        old = base.open("rb") if base is not None else None
        try:
            page = 0
            step = READ_BLOCK - READ_BLOCK % DIGEST
            while block := fresh.read(step):
                before = old.read(len(block)) if old is not None else b""
                if before == block:
                    page += len(block) // DIGEST
                    continue
                # Eight digests at a time first: most stretches of pages did not change.
                for g in range(0, len(block), GROUP):
                    if block[g : g + GROUP] == before[g : g + GROUP]:
                        page += len(block[g : g + GROUP]) // DIGEST
                        continue
                    for i in range(g, min(g + GROUP, len(block)), DIGEST):
                        digest = block[i : i + DIGEST]
                        if digest != before[i : i + DIGEST]:
                            yield page, digest
                        page += 1
        finally:
            if old is not None:
                old.close()


class HashCache:
    """`<dir>/<backup_id>.hashes` and `<backup_id>.json`, the newest KEEP_ENTRIES kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def remember(self, info: PageHashes, hashes: Path) -> None:
        """Keep the hashes of a backup that landed (copied: the staged file may go)."""
        private_dir(self.directory)
        target = self.directory / f"{info.backup_id}.hashes"
        if not target.exists():
            tmp = self.directory / f".{info.backup_id}.hashes.partial"
            tmp.unlink(missing_ok=True)
            try:
                os.link(hashes, tmp)  # the staged file is never written again
            except OSError:
                with hashes.open("rb") as src, open_private(tmp) as dst:
                    shutil.copyfileobj(src, dst)
            os.chmod(tmp, PRIVATE_FILE)  # a cache written by an older version was 0644
            os.replace(tmp, target)
        atomic_write_bytes(self.directory / f"{info.backup_id}.json", info.to_json())
        self._trim()

    def newest(self) -> list[PageHashes]:
        """Readable entries, newest first."""
        entries = []
        for sidecar in sorted(self.directory.glob("*.json"), reverse=True):
            if not is_backup_id(sidecar.stem):
                continue
            try:
                data = json.loads(sidecar.read_text())
                entries.append(PageHashes(**data))
            except (OSError, ValueError, TypeError):
                continue
        return entries

    def load(self, info: PageHashes) -> Path | None:
        """The hashes file of `info`, if it is whole and matches its sidecar."""
        path = self.directory / f"{info.backup_id}.hashes"
        try:
            if path.stat().st_size != info.page_count * DIGEST:
                return None
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(READ_BLOCK):
                    digest.update(block)
        except OSError:
            return None
        return path if digest.hexdigest() == info.hashes_sha256 else None

    def landed(self) -> dict[str, dict[str, str]]:
        """Destination URL (without secrets) -> its newest backup from here, and the
        fingerprint of the keys its packs are encrypted to."""
        try:
            data = json.loads((self.directory / LANDED).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(url): entry for url, entry in data.items() if isinstance(entry, dict)}

    def mark_landed(self, url: str, backup_id: str, recipients: str) -> None:
        """Record the backup `url` now holds as its newest (never an older one)."""
        landed = self.landed()
        if landed.get(url, {}).get("backup_id", "") < backup_id:
            landed[url] = {"backup_id": backup_id, "recipients": recipients}
            self._write_landed(landed)

    def forget_landed(self, url: str, gone: frozenset[str]) -> None:
        """`url` no longer has its newest backup, if that is one of `gone` (a newer one that
        landed since is kept)."""
        landed = self.landed()
        if landed.get(url, {}).get("backup_id") in gone:
            del landed[url]
            self._write_landed(landed)

    def _write_landed(self, landed: dict[str, dict[str, str]]) -> None:
        private_dir(self.directory)
        atomic_write_bytes(self.directory / LANDED, json.dumps(landed, sort_keys=True).encode())

    def bases_for(self, urls: Sequence[str], recipients: str) -> list[PageHashes]:
        """The cached backups a live read stages the change against: each destination's
        newest, when every destination has one here with the same keys (else none: the
        backup stages every page)."""
        landed = self.landed()
        entries = {info.backup_id: info for info in self.newest()}
        wanted: set[str] = set()
        for url in urls:
            entry = landed.get(url, {})
            if entry.get("backup_id") not in entries or entry.get("recipients") != recipients:
                return []
            wanted.add(entry["backup_id"])
        return [entries[i] for i in sorted(wanted, reverse=True)]

    def forget(self, backup_id: str) -> None:
        for suffix in (".json", ".hashes"):
            (self.directory / f"{backup_id}{suffix}").unlink(missing_ok=True)

    def _trim(self) -> None:
        """Keep the newest few and every destination's newest: a live read staged against
        those, and a destination that lags behind still builds on its own."""
        landed = {entry.get("backup_id") for entry in self.landed().values()}
        for info in self.newest()[KEEP_ENTRIES:]:
            if info.backup_id not in landed:
                self.forget(info.backup_id)
