"""The archive codec: a standard zstd frame, optionally wrapped in a standard age file.

Everything streams in fixed-size blocks, so memory does not grow with the database; the
database's and the archive's sha256 are computed on the way through, at no extra read.
The result opens without this tool: `age -d -i key | zstd -d > kotomi.db`.

Speed (figures in bench/README.md): compression runs in zstd's worker threads while this thread
reads and hashes; extraction decompresses in this thread while another hashes and writes the
result, so a restore keeps two cores busy. The level was chosen by `bench/run.py --codec`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

import pyrage  # imported up front: a Ctrl-C inside its first import makes it panic
import zstandard

from .errors import BackupError, ConfigError
from .fsutil import atomic_writer, no_space_is_disk_full, private_dir
from .priority import compression_threads
from .redaction import is_inline_identity

BLOCK = 1 << 20
# Chosen by `bench/run.py --codec` on a 1 GB Kotomi snapshot, 2 cores: level 2 takes 25 % less
# CPU than level 3 (3.6 s against 4.8 s) for an archive 1.8 % larger (306 MB against 300 MB);
# level 1 saves about 0.4 s more CPU but stores 6 % more (325 MB). Both sides stay standard
# zstd frames: any level decompresses with `zstd -d`. The worker threads follow the machine
# and the priority (`priority.compression_threads`).
ZSTD_LEVEL = 2

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    size: int
    sha256: str
    db_size: int
    db_sha256: str
    compression: str
    encryption: str
    seconds: float

    @property
    def ratio(self) -> float:
        return self.db_size / self.size if self.size else 0.0


def archive_suffix(encrypted: bool) -> str:
    return ".db.zst.age" if encrypted else ".db.zst"


def parse_recipients(text: str | None) -> list[Any]:
    """Parse comma-separated age recipients (age1... or ssh-ed25519/ssh-rsa public keys)."""
    recipients: list[Any] = []
    entries = [e.strip() for e in (text or "").split(",") if e.strip()]
    if text and not entries:
        # Set means "encrypt everything": an empty-looking value must not mean plaintext.
        raise ConfigError(
            "KOTOMI_BACKUP_AGE_RECIPIENTS is set but holds no key: give age1... public keys, "
            "or unset it to store unencrypted archives"
        )
    for index, entry in enumerate(entries, start=1):
        try:
            if entry.startswith("ssh-"):
                recipients.append(pyrage.ssh.Recipient.from_str(entry))
            else:
                recipients.append(pyrage.x25519.Recipient.from_str(entry))
        except Exception as exc:
            raise ConfigError(
                f"KOTOMI_BACKUP_AGE_RECIPIENTS entry {index} ({entry[:12]}...) is not an age "
                "public key: expected age1... (from `age-keygen -y key.txt`) or ssh-ed25519 ..."
            ) from exc
    return recipients


IDENTITY_SETTING = "KOTOMI_BACKUP_AGE_IDENTITY"


@dataclass(frozen=True)
class AgeIdentity:
    """Where the age identities for restores and drills come from: a key file, or the key
    itself (as SOPS and secret managers hand it over: one or more `AGE-SECRET-KEY-1...`
    lines, comments allowed). The key is never shown: not in `repr`, not in any error."""

    path: Path | None = None
    inline: str | None = field(default=None, repr=False)

    @classmethod
    def from_setting(cls, value: str) -> AgeIdentity:
        if is_inline_identity(value):
            return cls(inline=value)
        return cls(path=Path(value.strip()).expanduser())

    def describe(self) -> str:
        return (
            f"age identity file {self.path}" if self.path else f"the age key in {IDENTITY_SETTING}"
        )

    def load(self) -> list[Any]:
        if self.inline is not None:
            return _parse_identities(
                self.inline.replace(",", "\n").splitlines(), f"{IDENTITY_SETTING} (value not shown)"
            )
        assert self.path is not None
        return load_identities(self.path)


def load_identities(path: Path) -> list[Any]:
    """Read an age identity file; errors never echo the file's content, and name the path
    only when it looks like one (a key pasted with a typo is not a path to show)."""
    shown = str(path) if _looks_like_path(str(path)) else "(value not shown)"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(
            f"{IDENTITY_SETTING}: no age identity file {shown}; give the path of a key file "
            "or the key itself (AGE-SECRET-KEY-1...)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{IDENTITY_SETTING}: cannot read age identity file {shown}: {type(exc).__name__}"
        ) from None
    return _parse_identities(lines, shown)


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or text.startswith((".", "~"))
        or bool(re.fullmatch(r"[\w.-]{1,64}\.\w{1,8}", text))
    )


def _parse_identities(lines: Sequence[str], where: str) -> list[Any]:
    identities: list[Any] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise ConfigError(
                f"{where} line {number} is not an age identity (expected AGE-SECRET-KEY-1...)"
            ) from None
    if not identities:
        raise ConfigError(f"no age identity in {where} (expected AGE-SECRET-KEY-1... lines)")
    return identities


class Readable(Protocol):
    def readinto(self, buffer: Any, /) -> int | None: ...


class HashingReader(io.RawIOBase):
    """Reads from `raw`, counting and hashing what passes (and reporting it to `progress`)."""

    def __init__(self, raw: Readable, progress: Progress | None = None) -> None:
        self._raw = raw
        self._progress = progress
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            view = memoryview(buffer)[:n]
            self.digest.update(view)
            self.count += n
            if self._progress:
                self._progress(n)
        return n or 0


class HashingWriter(io.RawIOBase):
    """Writes to `raw`, counting and hashing what passes; refuses to write past `limit`
    bytes (what the manifest says the result holds: a bigger one is damaged or tampered)."""

    def __init__(self, raw: BinaryIO, limit: int | None = None) -> None:
        self._raw = raw
        self._limit = limit
        self.digest = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if self._limit is not None and self.count + view.nbytes > self._limit:
            raise BackupError(
                f"the archive holds more than the manifest's {self._limit} bytes "
                "(damaged or tampered)"
            )
        self._raw.write(view)
        self.digest.update(view)
        self.count += view.nbytes
        return view.nbytes


class _BackgroundWriter:
    """Hands blocks to a thread that hashes and writes them, so the caller can go on
    decompressing on the other core. At most `depth` blocks wait: memory stays bounded."""

    def __init__(self, sink: HashingWriter, depth: int = 4) -> None:
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kotomi-extract-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sink.write(block)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def stop(self) -> None:
        """Wait for every queued block to be written and the thread to end; never raises."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def check(self) -> None:
        """Raise what the writer thread hit, if anything."""
        if self._error is not None:
            raise self._error


class Inflater(io.RawIOBase):
    """A writable that decompresses into `sink` and knows whether the frame was complete.

    An error raised by `sink` (writing the result: a full disk) is kept apart, so that it is
    never reported as damage of the stored data.
    """

    def __init__(self, sink: Callable[[bytes], None], what: str = "archive") -> None:
        self._sink = sink
        self._dobj = zstandard.ZstdDecompressor().decompressobj(write_size=BLOCK)
        self.what = what
        self.sink_error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        # bytes pass through as they are (no copy); a view from pyrage is copied once.
        chunk = self._dobj.decompress(data if isinstance(data, bytes) else bytes(view))
        if chunk:
            try:
                self._sink(chunk)
            except BaseException as exc:
                self.sink_error = exc
                raise
        return view.nbytes

    def finish(self) -> None:
        if not self._dobj.eof:
            raise BackupError(f"{self.what} is truncated: the zstd frame does not end")


def decrypt_and_inflate(
    reader: HashingReader,
    inflater: Inflater,
    *,
    encrypted: bool,
    identities: Sequence[Any] = (),
) -> None:
    """Feed a stored stream (age-decrypted when `encrypted`) through `inflater` to the end.

    Failures of the stored data become one line: a key that does not match is a ConfigError
    (exit 2), damage is a BackupError; what the sink raised is raised as it is.
    """
    what = inflater.what
    try:
        if encrypted:
            if not identities:
                raise ConfigError(
                    f"{what} is encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to the age key file "
                    "(or the key itself)"
                )
            pyrage.decrypt_io(reader, inflater, list(identities))
        else:
            while block := reader.read(BLOCK):
                inflater.write(block)
        inflater.finish()
    except (pyrage.DecryptError, zstandard.ZstdError, OSError) as exc:
        if inflater.sink_error is not None:
            raise inflater.sink_error from None
        if isinstance(exc, zstandard.ZstdError):
            raise BackupError(f"{what} is damaged: zstd says {exc}") from exc
        if "no matching keys" in str(exc).lower():
            raise ConfigError(
                f"cannot decrypt {what}: the age identity does not match its recipients "
                "(check KOTOMI_BACKUP_AGE_IDENTITY)"
            ) from exc
        if isinstance(exc, pyrage.DecryptError):
            raise BackupError(f"cannot decrypt {what}: {exc} (damaged age header?)") from exc
        # pyrage reports a payload that fails its MAC as a bare OSError
        raise BackupError(f"{what} is damaged: age says {exc}") from exc


def write_archive(
    source: Path,
    dest: Path,
    *,
    recipients: Sequence[Any] = (),
    level: int = ZSTD_LEVEL,
    threads: int | None = None,
    progress: Progress | None = None,
    durable: bool = True,
) -> ArchiveResult:
    """Compress (and encrypt when `recipients` is not empty) `source` into `dest`, atomically.

    `threads`: zstd's worker threads (0: in this thread); default: what the machine leaves
    a backup (`priority.compression_threads`).

    `durable=False` skips the fsyncs: only for an archive this same process uploads and
    deletes at once (the store's copy is the durable one).
    """
    started = time.monotonic()
    db_size = source.stat().st_size
    if threads is None:
        threads = compression_threads()
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    opener = atomic_writer if durable else _renaming_writer
    with (
        no_space_is_disk_full(dest.parent, db_size),
        source.open("rb", buffering=0) as src,
        opener(dest) as out,
    ):
        reader = HashingReader(src, progress)
        writer = HashingWriter(out)
        compressed = cctx.stream_reader(cast(IO[bytes], reader), size=db_size, read_size=BLOCK)
        if recipients:
            pyrage.encrypt_io(compressed, writer, list(recipients))
        else:
            while block := compressed.read(BLOCK):
                writer.write(block)
    if reader.count != db_size:
        raise BackupError(f"{source} changed size while being archived; take a new snapshot")
    return ArchiveResult(
        path=dest,
        size=writer.count,
        sha256=writer.digest.hexdigest(),
        db_size=db_size,
        db_sha256=reader.digest.hexdigest(),
        compression="zstd",
        encryption="age" if recipients else "none",
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def _renaming_writer(target: Path) -> Iterator[BinaryIO]:
    """`atomic_writer` without the fsyncs: complete or absent, but not crash-durable."""
    private_dir(target.parent, tighten=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    archive_sha256: str
    db_sha256: str
    db_size: int


def extract_archive(
    archive: BinaryIO,
    dest: Path,
    *,
    identities: Sequence[Any] = (),
    encrypted: bool,
    progress: Progress | None = None,
    limit: int | None = None,
    durable: bool = True,
) -> ExtractResult:
    """Decrypt and decompress a stream into `dest` (atomically), hashing both sides; at most
    `limit` bytes are written (the manifest's size). A full disk is a `DiskFull`.
    `durable=False` leaves the fsync to the caller (a restore overlaps it with its check)."""
    reader = HashingReader(cast(Readable, archive), progress)
    opener = atomic_writer if durable else _renaming_writer
    with no_space_is_disk_full(dest.parent, limit), opener(dest) as out:
        writer = HashingWriter(out, limit)
        background = _BackgroundWriter(writer)
        inflater = Inflater(background.write)
        try:
            decrypt_and_inflate(reader, inflater, encrypted=encrypted, identities=identities)
        finally:
            background.stop()
        background.check()
    return ExtractResult(
        path=dest,
        archive_sha256=reader.digest.hexdigest(),
        db_sha256=writer.digest.hexdigest(),
        db_size=writer.count,
    )
