"""The kinds of failure the CLI and the Dagster layer tell apart.

Every message is one line that says what is wrong and what to do. It never holds a secret:
the message is redacted when the error is made (`redaction.redact`), so it is safe wherever
it goes (CLI, Dagster events, alerts, drill records on the store).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from .redaction import redact

# A write that found no room: a full disk, a quota, or a file-size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class BackupError(Exception):
    """The operation failed (verification, checksum, upload...): CLI exit 1."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


class ConfigError(BackupError):
    """Bad usage or configuration (missing file, bad URL, bad key): CLI exit 2."""


class DiskFull(BackupError):
    """A local disk (staging, scratch, restore target, local store) had no room for a write.

    Never evidence against a backup: a drill that meets it records nothing."""

    def __init__(
        self, path: Path | str, needed: int | None = None, free: int | None = None
    ) -> None:
        need = f" (needs about {mib(needed)} MiB" if needed else ""
        if need and free is not None:
            need += f", {free >> 20} MiB free"
        need += ")" if need else ""
        super().__init__(f"{path}: disk full{need}; free space there or point it elsewhere")
        self.path = Path(path)
        self.needed = needed


def mib(size: int) -> int:
    """Whole MiB, rounded up (a 1-byte need is 1 MiB, not 0)."""
    return max(1, -(-size // (1 << 20)))


def first_line(text: str | None, limit: int = 300) -> str:
    """Our own message as one line: its first non-empty line, stripped, cut to `limit`."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def squeezed(text: str, limit: int = 200) -> str:
    """Someone else's text (a server's error body) as one line: every run of whitespace one
    space, cut to `limit`."""
    return re.sub(r"\s+", " ", text).strip()[:limit]


_REPEATED_URL = re.compile(
    r"(?P<url>\b[a-z][a-z0-9+.-]*://[^\s;]*?)(?P<gap>: | failed: )(?:destination )?(?P=url): "
)


def without_repeated_prefix(text: str) -> str:
    """`s3://b/p: s3://b/p: listing...` -> `s3://b/p: listing...`, `upload to X failed:
    destination X: ...` -> `upload to X failed: ...`: a location put before a message that
    starts with it is said once."""
    return _REPEATED_URL.sub(lambda m: f"{m['url']}{m['gap']}", text)


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS
