"""Calendar time in a zone: restic-style durations (``1y2m3d4h``) and time zone lookup.

Retention cuts its buckets and its ``keep_within`` window with these; the settings table
(config.py) checks ``KOTOMI_BACKUP_KEEP_WITHIN`` and ``KOTOMI_BACKUP_TIMEZONE`` with them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CalendarDuration", "time_zone"]

_DURATION_PART = re.compile(r"(\d+)([ymdh])")


@dataclass(frozen=True)
class CalendarDuration:
    """A restic-style duration (``1y2m3d4h``): years, months, days and hours.

    Years, months and days are calendar steps in the policy's time zone (``2d`` before 12:00 is
    12:00 two days earlier, even across a DST change); hours are exact hours. ``m`` is months,
    as in restic, not minutes.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __post_init__(self) -> None:
        for name in ("years", "months", "days", "hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"CalendarDuration.{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"CalendarDuration.{name} must be >= 0, got {value}")

    @classmethod
    def parse(cls, text: str) -> CalendarDuration:
        """Parse ``2d``, ``36h``, ``1y2m3d4h`` (units y, m = months, d, h; each at most once)."""
        s = text.strip()
        parts: dict[str, int] = {}
        pos = 0
        while pos < len(s):
            match = _DURATION_PART.match(s, pos)
            if match is None or match.group(2) in parts:
                parts = {}
                break
            parts[match.group(2)] = int(match.group(1))
            pos = match.end()
        if not parts:
            raise ValueError(
                f"expected a duration like 2d, 36h or 1y2m3d4h "
                f"(y years, m months, d days, h hours), got {text!r}"
            )
        return cls(
            years=parts.get("y", 0),
            months=parts.get("m", 0),
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
        )

    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        text = "".join(
            f"{value}{unit}"
            for value, unit in (
                (self.years, "y"),
                (self.months, "m"),
                (self.days, "d"),
                (self.hours, "h"),
            )
            if value
        )
        return text or "0h"

    def before(self, instant: datetime, zone: tzinfo) -> datetime | None:
        """``instant`` minus this duration, like Go's ``t.AddDate(-y, -m, -d).Add(-h)``.

        The calendar part is done on the wall clock in ``zone``, with Go's normalisation
        (March 31 minus one month is March 3, or 2 in a leap year). Returns None when the
        result is before year 1, i.e. earlier than any backup.
        """
        local = instant.astimezone(zone)
        month0 = local.month - 1 - self.months
        year = local.year - self.years + month0 // 12
        month = month0 % 12 + 1
        try:
            day = date(year, month, 1) + timedelta(days=local.day - 1 - self.days)
            wall = datetime.combine(day, local.time())
            return _wall_to_utc(wall, zone) - timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None

    def after(self, instant: datetime, zone: tzinfo) -> datetime | None:
        """``instant`` plus this duration, the mirror of `before` (Go's ``t.AddDate(y, m,
        d).Add(h)``); None past year 9999."""
        local = instant.astimezone(zone)
        month0 = local.month - 1 + self.months
        year = local.year + self.years + month0 // 12
        month = month0 % 12 + 1
        try:
            day = date(year, month, 1) + timedelta(days=local.day - 1 + self.days)
            wall = datetime.combine(day, local.time())
            return _wall_to_utc(wall, zone) + timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None

    def approximate(self) -> timedelta:
        """About how long this is (a month 30 days, a year 365): for slack, not calendars."""
        return timedelta(days=365 * self.years + 30 * self.months + self.days, hours=self.hours)


def _wall_to_utc(wall: datetime, zone: tzinfo) -> datetime:
    """Resolve a naive wall-clock time in ``zone`` to UTC exactly as Go's ``time.Date`` does.

    Go looks up the zone offset at the wall time read as UTC, and uses the offset at the
    resulting instant instead if that one falls outside the zone period it found. For a
    repeated (autumn) hour this picks the later instant east of Greenwich and the earlier one
    west of it; for a skipped (spring) hour it moves by the offset difference.
    """
    offset = wall.replace(tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)
    utc = wall - offset
    offset_at_utc = utc.replace(tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)
    if offset_at_utc != offset:
        utc = wall - offset_at_utc
    return utc.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=64)
def time_zone(name: str) -> tzinfo:
    """The IANA zone `name` (UTC without a lookup); ValueError says what to give."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: expected an IANA name such as UTC, "
            f"Europe/Berlin or America/New_York"
        ) from None
