"""The page map of a paged backup: where every page of the database lives, as runs.

A page map is self-contained: it names packs, never another backup, so removing any other
backup never breaks it. Runs of pages that did not change since the previous backup stay in
the same packs at consecutive entries and cost one run each, whatever their length.

Encoding (zstd frame, not encrypted: it holds positions and pack names, no content):

    line 1     JSON {"page_size", "page_count", "packs": [pack file names]}
    then       runs, little-endian u32 x 4: first_page, count, pack, first_entry

Pages are numbered from 0 (SQLite's page number minus one). Page `first_page + k` of a run is
entry `first_entry + k` of `packs[pack]`; entry `e` of a pack is bytes
`[e * page_size, (e + 1) * page_size)` of the pack's decompressed content.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import zstandard

from ..errors import BackupError

_RUN_FIELDS = 4
_U32 = "I"  # 4 bytes on every platform CPython supports (checked below)


def _u32(values: list[int] | range | None = None) -> array[int]:
    out = array(_U32, values or [])
    if out.itemsize != 4:  # pragma: no cover - exotic platforms
        raise RuntimeError("array('I') is not 32-bit here")
    return out


@dataclass(frozen=True)
class Run:
    first_page: int
    count: int
    pack: int
    first_entry: int


@dataclass
class PageMap:
    page_size: int
    page_count: int
    packs: list[str]
    runs: array[int]  # flat: first_page, count, pack, first_entry, ...

    def iter_runs(self) -> Iterator[Run]:
        r = self.runs
        for i in range(0, len(r), _RUN_FIELDS):
            yield Run(r[i], r[i + 1], r[i + 2], r[i + 3])

    @property
    def run_count(self) -> int:
        return len(self.runs) // _RUN_FIELDS

    def locations(self) -> tuple[array[int], array[int]]:
        """(pack of page, entry of page) for every page, 8 bytes per page."""
        pack_of = _u32([0]) * self.page_count
        entry_of = _u32([0]) * self.page_count
        for run in self.iter_runs():
            end = run.first_page + run.count
            pack_of[run.first_page : end] = _u32([run.pack]) * run.count
            entry_of[run.first_page : end] = _u32(
                range(run.first_entry, run.first_entry + run.count)
            )
        return pack_of, entry_of

    def encode(self) -> bytes:
        header = {"page_size": self.page_size, "page_count": self.page_count, "packs": self.packs}
        runs = array(_U32, self.runs)
        if sys.byteorder != "little":  # pragma: no cover
            runs.byteswap()
        raw = json.dumps(header, separators=(",", ":")).encode() + b"\n" + runs.tobytes()
        return zstandard.ZstdCompressor(level=9, write_checksum=True).compress(raw)

    @classmethod
    def decode(cls, data: bytes, *, where: str) -> PageMap:
        try:
            raw = zstandard.ZstdDecompressor().decompress(data)
            line, _, body = raw.partition(b"\n")
            header = json.loads(line)
            runs = _u32()
            runs.frombytes(body)
            if sys.byteorder != "little":  # pragma: no cover
                runs.byteswap()
            page_map = cls(
                page_size=int(header["page_size"]),
                page_count=int(header["page_count"]),
                packs=[str(p) for p in header["packs"]],
                runs=runs,
            )
        except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{where}: unreadable page map ({type(exc).__name__})") from exc
        page_map.check(where)
        return page_map

    def check(self, where: str) -> None:
        """Every page covered exactly once, in order, by runs that name existing packs."""
        if len(self.runs) % _RUN_FIELDS:
            raise BackupError(f"{where}: page map is torn (partial run)")
        expected = 0
        for run in self.iter_runs():
            if run.first_page != expected or run.count == 0 or run.pack >= len(self.packs):
                raise BackupError(f"{where}: page map is inconsistent at page {expected}")
            expected += run.count
        if expected != self.page_count:
            raise BackupError(
                f"{where}: page map covers {expected} pages, the database has {self.page_count}"
            )

    def entries_used(self) -> dict[str, set[int]]:
        """For each pack, the entries this backup needs."""
        used: dict[str, set[int]] = {}
        for run in self.iter_runs():
            used.setdefault(self.packs[run.pack], set()).update(
                range(run.first_entry, run.first_entry + run.count)
            )
        return used


def encode_runs(pack_of: array[int], entry_of: array[int]) -> array[int]:
    """Runs from per-page locations: consecutive pages at consecutive entries of one pack."""
    runs = _u32()
    count = len(pack_of)
    page = 0
    while page < count:
        pack, entry = pack_of[page], entry_of[page]
        end = page + 1
        while end < count and pack_of[end] == pack and entry_of[end] == entry + (end - page):
            end += 1
        runs.extend((page, end - page, pack, entry))
        page = end
    return runs


def build_page_map(
    page_size: int, packs: list[str], pack_of: array[int], entry_of: array[int]
) -> PageMap:
    """A page map from per-page locations, keeping only the packs it references."""
    used = sorted(set(pack_of))
    renumber = {old: new for new, old in enumerate(used)}
    if len(used) != len(packs) or used != list(range(len(packs))):
        pack_of = _u32([renumber[p] for p in pack_of])
        packs = [packs[old] for old in used]
    page_map = PageMap(
        page_size=page_size,
        page_count=len(pack_of),
        packs=packs,
        runs=encode_runs(pack_of, entry_of),
    )
    page_map.check("new page map")
    return page_map


def splice_page_map(
    base: PageMap | None,
    page_size: int,
    page_count: int,
    packs: list[str],
    changed: Sequence[int],
) -> PageMap:
    """`base`'s runs with the `changed` pages put in (flat triples: page, index in `packs`,
    entry; by page): work in proportion to the runs and the changes, not to the database.
    `packs` starts with `base.packs`; pages past the base's end must all be in `changed`."""
    runs = _u32()

    def emit(page: int, count: int, pack: int, entry: int) -> None:
        if (
            runs
            and runs[-4] + runs[-3] == page
            and runs[-2] == pack
            and runs[-1] + runs[-3] == entry
        ):
            runs[-3] += count
        else:
            runs.extend((page, count, pack, entry))

    i, n = 0, len(changed)
    for run in base.iter_runs() if base is not None else ():
        start, end = run.first_page, min(run.first_page + run.count, page_count)
        page = start
        while page < end:
            if i < n and changed[i] < end:
                at, pack, entry = changed[i], changed[i + 1], changed[i + 2]
                if at > page:
                    emit(page, at - page, run.pack, run.first_entry + page - start)
                emit(at, 1, pack, entry)
                i, page = i + 3, at + 1
            else:
                emit(page, end - page, run.pack, run.first_entry + page - start)
                page = end
    for k in range(i, n, 3):
        emit(changed[k], 1, changed[k + 1], changed[k + 2])
    used = sorted(set(runs[2::_RUN_FIELDS]))
    if used != list(range(len(packs))):
        renumber = {old: new for new, old in enumerate(used)}
        for k in range(2, len(runs), _RUN_FIELDS):
            runs[k] = renumber[runs[k]]
        packs = [packs[old] for old in used]
    page_map = PageMap(page_size=page_size, page_count=page_count, packs=packs, runs=runs)
    page_map.check("new page map")
    return page_map
