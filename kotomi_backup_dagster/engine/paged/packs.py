"""Pack files: pages compressed together, shared by every backup that needs them.

A pack is a standard zstd frame of whole pages back to back (entry `e` at `e * page_size`),
wrapped in a standard age file when the backups are encrypted, so by hand
`age -d -i key p.pack.age | zstd -d` gives the raw pages. Packs are immutable: a pack's name
is chosen once, at write time (its UTC time first, which is what lets pruning tell a pack of
an upload in flight from an abandoned one), and a pack never changes after that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pyrage
import zstandard

from ..archive import HashingReader, HashingWriter, Inflater, Readable, decrypt_and_inflate
from ..errors import BackupError, ConfigError
from ..fsutil import open_private, private_dir
from ..manifest import backup_id_time, is_backup_id
from ..priority import compression_threads
from ..stores import BackupStore, ObjectNotFound

PACKS = "packs"
# 32 MiB of pages (8,192 pages of 4 KiB) per pack, about 10 MB compressed: an hourly backup at a
# few percent of churn is one pack, and a pack is small enough to repack cheaply.
PACK_RAW_BYTES = 32 << 20
ZSTD_LEVEL = 2  # as the full archive (engine/archive.py), and with its threads
BLOCK = 1 << 20


def packs_prefix(name: str) -> str:
    return f"{name}/{PACKS}"


def pack_key(name: str, pack_file: str) -> str:
    return f"{packs_prefix(name)}/{pack_file}"


def new_pack_stem(now: datetime | None = None) -> str:
    """`<UTC time>-<6 hex>`: unique per writer; the pack files add `-<n>.pack[.age]`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def pack_time(pack_file: str) -> datetime | None:
    """When the pack was written, from its name; None for a name that is not a pack's."""
    stamp = pack_file[:23]
    if not is_backup_id(stamp) or not pack_file.endswith((".pack", ".pack.age")):
        return None
    return backup_id_time(stamp)


def is_old_pack(pack_file: str, now: datetime, age: timedelta) -> bool:
    written = pack_time(pack_file)
    return written is not None and written < now - age


@dataclass(frozen=True)
class StagedPack:
    file: str  # the pack's name on the store, e.g. 20261127T020000Z-a1b2c3-0.pack.age
    path: Path
    size: int
    sha256: str
    pages: int

    def info(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "pages": self.pages}


class PackWriter:
    """Writes pages into packs of about PACK_RAW_BYTES in `directory`, rolling to a new pack
    when one is full. `add` returns where the page went: (pack number, entry)."""

    def __init__(
        self,
        directory: Path,
        page_size: int,
        *,
        recipients: Sequence[Any] = (),
        stem: str | None = None,
        first_number: int = 0,
    ) -> None:
        self.directory = directory
        self.page_size = page_size
        self.recipients = list(recipients)
        self.stem = stem or new_pack_stem()
        self.per_pack = max(1, PACK_RAW_BYTES // page_size)
        self.done: list[StagedPack] = []
        self._number = first_number
        self._entries = 0
        self._raw: BinaryIO | None = None
        self._hashed: HashingWriter | None = None
        self._zstd: Any = None
        self._threads = compression_threads()  # one core left to the database
        private_dir(directory, tighten=False)

    def _suffix(self) -> str:
        return ".pack.age" if self.recipients else ".pack"

    def _open(self) -> None:
        path = self.directory / f".{self.stem}-{self._number}.zst.partial"
        self._raw = open_private(path)
        self._hashed = HashingWriter(self._raw)  # what lands, unless age wraps it after
        cctx = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, threads=self._threads, write_checksum=True
        )
        self._zstd = cctx.stream_writer(cast(IO[bytes], self._hashed), closefd=False)
        self._entries = 0

    def add(self, page: bytes | memoryview) -> tuple[int, int]:
        """Append one page; returns (index of its pack in `files()`, entry)."""
        if self._zstd is None:
            self._open()
        self._zstd.write(page)
        entry = self._entries
        self._entries += 1
        where = (len(self.done), entry)
        if self._entries >= self.per_pack:
            self._finish()
        return where

    def _finish(self) -> None:
        if self._zstd is None:
            return
        self._zstd.flush(zstandard.FLUSH_FRAME)
        assert self._raw is not None
        self._raw.close()
        compressed = Path(self._raw.name)
        final = self.directory / f"{self.stem}-{self._number}{self._suffix()}"
        hashed = self._hashed
        assert hashed is not None
        if self.recipients:
            with compressed.open("rb") as src, open_private(final) as out:
                hashed = HashingWriter(out)
                pyrage.encrypt_io(src, hashed, self.recipients)
            compressed.unlink()
        else:
            os.replace(compressed, final)
        self.done.append(
            StagedPack(
                file=final.name,
                path=final,
                size=hashed.count,
                sha256=hashed.digest.hexdigest(),
                pages=self._entries,
            )
        )
        self._number += 1
        self._zstd = None
        self._raw = None

    def close(self) -> list[StagedPack]:
        self._finish()
        return self.done

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.close()
            Path(self._raw.name).unlink(missing_ok=True)
        for pack in self.done:
            pack.path.unlink(missing_ok=True)


# Reading --------------------------------------------------------------------------------

PageSink = Callable[[int, memoryview], None]  # (offset in the pack's raw pages, data)


@dataclass(frozen=True)
class PackRead:
    size: int
    sha256: str
    raw_bytes: int


def read_pack(
    stream: BinaryIO,
    sink: PageSink,
    *,
    encrypted: bool,
    identities: Sequence[Any] = (),
) -> PackRead:
    """Stream one stored pack through `sink`; the caller compares size and sha256."""
    offset = 0

    def feed(chunk: bytes) -> None:
        nonlocal offset
        sink(offset, memoryview(chunk))
        offset += len(chunk)

    source = HashingReader(cast(Readable, stream))
    decrypt_and_inflate(
        source, Inflater(feed, what="pack"), encrypted=encrypted, identities=identities
    )
    return PackRead(size=source.count, sha256=source.digest.hexdigest(), raw_bytes=offset)


def read_stored_pack(
    store: BackupStore,
    name: str,
    pack: str,
    info: dict[str, Any],
    sink: PageSink,
    identities: Sequence[Any],
    version: str = "",
) -> PackRead:
    """`read_pack` of a pack on `store` (the `version` its manifest records), held to the
    size and sha256 the manifest records.

    A damaged age header looks like a wrong key ("no matching keys"); the pack's sha256 tells
    the two apart, so a tampered pack is reported as such and not blamed on the key.
    """
    key = pack_key(name, pack)

    def opened() -> BinaryIO:
        try:
            return store.open_read(key, version)
        except ObjectNotFound as exc:
            raise BackupError(f"pack {pack} is missing at {store.url}") from exc

    try:
        with contextlib.closing(opened()) as stream:
            result = read_pack(stream, sink, encrypted=pack.endswith(".age"), identities=identities)
    except ConfigError:
        if identities and _sha256_of(opened()) != info["sha256"]:
            raise BackupError(
                f"pack {pack} sha256 differs from the manifest (tampered or torn)"
            ) from None
        raise
    except BackupError as exc:
        raise BackupError(f"pack {pack}: {exc}") from exc
    if result.size != int(info["size"]) or result.sha256 != info["sha256"]:
        raise BackupError(f"pack {pack} sha256 differs from the manifest (tampered or torn)")
    return result


def _sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    with contextlib.closing(stream):
        while block := stream.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
