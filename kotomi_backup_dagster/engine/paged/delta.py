"""Where the upload reads a staged backup's pages: a snapshot file, or the changed pages only.

A backup read live (livepages.py) has no snapshot file. While its pages are hashed, the pages
whose hash differs from the same page of any cached backup it may build on (its "bases") are
kept in `pages.delta`, in page order, with their page numbers in `pages.delta.idx` (u32).
The upload to a destination whose newest backup is one of those bases needs no other page.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import BackupError
from ..fsutil import open_private
from .hashes import DIGEST

DELTA = "pages.delta"
DELTA_INDEX = "pages.delta.idx"


class PageSource(Protocol):
    """The staged pages of one backup, read by page index (0-based)."""

    def read(self, page: int) -> bytes: ...

    def close(self) -> None: ...


class SnapshotPages:
    """Every page, from a snapshot file."""

    def __init__(self, path: Path, page_size: int) -> None:
        self.page_size = page_size
        self._fd = os.open(path, os.O_RDONLY)

    def read(self, page: int) -> bytes:
        return os.pread(self._fd, self.page_size, page * self.page_size)

    def close(self) -> None:
        os.close(self._fd)


class DeltaPages:
    """Only the pages that differ from the bases; asking for another one is an error."""

    def __init__(self, workdir: Path, page_size: int) -> None:
        self.page_size = page_size
        self._pages = array("I")
        self._pages.frombytes((workdir / DELTA_INDEX).read_bytes())
        self._fd = os.open(workdir / DELTA, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self._pages)

    def read(self, page: int) -> bytes:
        at = bisect_left(self._pages, page)
        if at == len(self._pages) or self._pages[at] != page:
            raise BackupError(f"page {page} was not staged (it did not change from the bases)")
        return os.pread(self._fd, self.page_size, at * self.page_size)

    def close(self) -> None:
        os.close(self._fd)


class DeltaWriter:
    """Keeps the pages that differ from any base: `keep` is `hash_blocks`' callback."""

    def __init__(self, workdir: Path, page_size: int, bases: Sequence[Path]) -> None:
        self.page_size = page_size
        self.kept = 0
        self._out = open_private(workdir / DELTA)
        self._index = open_private(workdir / DELTA_INDEX)
        self._bases: list[BinaryIO] = [path.open("rb") for path in bases]

    def keep(self, first: int, block: bytes, digests: bytes) -> None:
        before = [base.read(len(digests)) for base in self._bases]
        if all(old == digests for old in before):
            return  # the common case: nothing in this block changed
        size = self.page_size
        pages = array("I")
        for n in range(len(digests) // DIGEST):
            digest = digests[n * DIGEST : (n + 1) * DIGEST]
            if any(old[n * DIGEST : (n + 1) * DIGEST] != digest for old in before):
                pages.append(first + n)
                self._out.write(block[n * size : (n + 1) * size])
        self._index.write(pages.tobytes())
        self.kept += len(pages)

    def close(self) -> None:
        for fh in (self._out, self._index, *self._bases):
            fh.close()
