"""Values shaped like the ones in a real Kotomi file: UUIDv4 keys and its two timestamp forms.

Every value comes from the ``random.Random`` or the epoch seconds it is given, so a seeded
generator gives the same file every time.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

__all__ = ["format_default_timestamp", "format_go_timestamp", "random_uuid4"]


def random_uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (deterministic for a seeded ``rng``)."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_default_timestamp(epoch_seconds: int) -> str:
    """``YYYY-MM-DD HH:MM:SS`` (UTC), as SQLite's ``CURRENT_TIMESTAMP`` default writes it."""
    d = datetime.fromtimestamp(epoch_seconds, UTC)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def format_go_timestamp(epoch_seconds: int, nanos: int = 0, offset_minutes: int = 0) -> str:
    """``2006-01-02 15:04:05.999999999-07:00``, as the Go SQLite driver writes a ``time.Time``.

    Trailing zeros of the fraction are dropped, and the fraction vanishes when it is zero.
    """
    d = datetime.fromtimestamp(epoch_seconds + offset_minutes * 60, UTC)
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    sign = "-" if offset_minutes < 0 else "+"
    off = abs(offset_minutes)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}{frac}{sign}{off // 60:02d}:{off % 60:02d}"
    )
