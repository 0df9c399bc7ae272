"""How long a kept backup must stay locked: until it leaves the longest tier it fills.

Pure functions over a retention decision (retention.py): no store, no clock of their own.

A backup kept as "daily 2026-12-08" with 7 daily slots leaves that tier when seven newer days
hold a backup: at the earliest, the start of 2026-12-15 in the policy's zone. So the horizon
of a bucket tier is its bucket's start plus N buckets (hours, days, ISO weeks, months,
years), and of "within D" the backup's time plus D (the window counts back from the newest
backup, which is about now). Both are the earliest moment the tier can let go of it; if
backups stop, it stays in the tier longer, and the keeper, which recomputes at every run,
extends the lock again while the backup is still kept.

Only a *closed* bucket fixes its backup: while the day (week, month, year) is still running,
the newest backup in it is provisional, since the next one in the same bucket takes its slot.
Locking it to the bucket's horizon would lock every backup that was ever the newest of its
year for three years (kopia#4894's complaint); so in an open bucket the need is rolling, and
the bucket's last backup gets the horizon once the bucket has closed.

Reasons with no end of their own ("last N", an unlimited count (-1), the newest backup, a
backup kept for inspection) are *rolling*: they need the lock to reach a little past now, and
the keeper keeps pushing it out while the reason holds (with slack, so not at every run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from ..calendar_time import CalendarDuration
from ..retention import RetentionPolicy

# The kinds of reasons retention.py gives, by their first word ("oldest daily ..." counts as
# "daily"); the rest (newest, kept for inspection, ...) are rolling.
_BUCKET_KINDS = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Need:
    """How long one backup's objects must stay locked, from `now`: until `until`; `rolling`
    when that end moves with time (it is re-extended while the reason holds)."""

    until: datetime
    rolling: bool
    reason: str  # the reason that decided it, for messages ("monthly 2026-11")


def backup_need(
    reasons: list[str], moment: datetime, policy: RetentionPolicy, now: datetime, floor: timedelta
) -> Need:
    """The lock a backup made at `moment`, kept for `reasons`, needs at `now`: the latest end
    among its reasons, and never less than `now + floor` (a kept backup is always locked a
    little ahead, whatever its tiers say: the next keeper run decides again)."""
    best = Need(now + floor, True, reasons[0] if reasons else "kept")
    for reason in reasons:
        end = reason_end(reason, moment, policy, now)
        if end is not None and end > best.until:
            best = Need(end, False, reason)
    return best


def reason_end(
    reason: str, moment: datetime, policy: RetentionPolicy, now: datetime
) -> datetime | None:
    """When one reason lets go of a backup made at `moment` (earliest), or None when the
    reason has no end of its own, or its bucket is still open at `now` (rolling)."""
    words = reason.split()
    if words and words[0] == "oldest":
        words = words[1:]
    if not words:
        return None
    kind = words[0]
    if kind == "within":
        within = policy.keep_within
        if within is None:
            return None
        if isinstance(within, CalendarDuration):
            return within.after(moment, policy.tzinfo)
        return moment + within
    if kind not in _BUCKET_KINDS:
        return None
    count = getattr(policy, f"keep_{kind}")
    if count <= 0:  # -1: every bucket is kept, so the tier never lets go: rolling
        return None
    closes = bucket_end(kind, moment, 1, policy.tzinfo)
    if closes is None or now < closes:
        return None  # a newer backup in the same bucket may still take its place
    return bucket_end(kind, moment, count, policy.tzinfo)


def bucket_end(kind: str, moment: datetime, count: int, zone: tzinfo) -> datetime | None:
    """The start of the bucket `count` buckets after the one `moment` is in, in `zone`."""
    local = moment.astimezone(zone)
    try:
        if kind == "hourly":
            start = local.replace(minute=0, second=0, microsecond=0)
            return (start + timedelta(hours=count)).astimezone(zone)
        if kind == "daily":
            day = local.date() + timedelta(days=count)
        elif kind == "weekly":
            day = local.date() - timedelta(days=local.weekday()) + timedelta(weeks=count)
        elif kind == "monthly":
            months = local.year * 12 + local.month - 1 + count
            day = date(months // 12, months % 12 + 1, 1)
        else:  # yearly
            day = date(local.year + count, 1, 1)
    except (ValueError, OverflowError):
        return None
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def pack_need(needs: list[Need]) -> Need | None:
    """A shared pack is needed as long as the longest need among the backups that use it."""
    return max(needs, key=lambda n: n.until, default=None)
