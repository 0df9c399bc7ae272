"""Retention planning with the semantics of ``restic forget``.

Pure functions over timestamps: no I/O, no Dagster. The prune command and the Dagster layer
turn the decisions into deletions.

How a plan is made (restic 0.16+ ``forget``, ``internal/data/snapshot_policy.go``):

* Backups are sorted newest first.
* Each bucket kind (``last``, ``hourly``, ``daily``, ``weekly`` by ISO year-week, ``monthly``,
  ``yearly``) is counted on its own. Walking from the newest, a backup is kept for a kind when
  its bucket value (its hour, day, ISO week, month or year in the policy's time zone) differs
  from the value of the previous backup kept for that kind, and the kind still has slots left.
  ``-1`` means unlimited slots. So each kind keeps the newest backup of each of its N newest
  buckets.
* When a kind still has slots left at the oldest backup, that backup is kept too, with the
  reason prefixed by ``oldest`` (restic >= 0.16: it maximises the history kept while the
  policy is not yet full).
* ``keep_within`` keeps every backup strictly newer than the newest backup's time minus the
  duration. The reference is the newest backup, not the wall clock, so a host that stopped
  backing up does not lose its last backups to the passing of time.
* Buckets are computed in the policy's time zone, on local wall-clock fields, so they are right
  across DST changes (the repeated autumn hour is one hourly bucket, as in restic).

``now`` is used exactly as restic uses its clock: backups dated at or after ``now`` (clock skew)
are not taken as the newest backup that ``keep_within`` counts back from (when every backup is,
all of them are within, as in restic). It defaults to the current time. The count buckets never
look at it.

Reasons read ``last``, ``hourly 2026-11-27T14``, ``daily 2026-11-27``, ``weekly 2026-W48``,
``monthly 2026-11``, ``yearly 2026``, ``oldest yearly 2025`` and ``within 2d``, in restic's
order (within first). A policy that keeps nothing raises ValueError instead of planning the
removal of every backup (restic's CLI refuses it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from . import config
from .calendar_time import CalendarDuration, time_zone

__all__ = [
    "BackupRef",
    "CalendarDuration",
    "RetentionDecision",
    "RetentionPolicy",
    "plan_backups",
    "plan_retention",
]

_KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_LAST, _HOURLY, _DAILY, _WEEKLY, _MONTHLY, _YEARLY = range(6)

REASON_NEWEST = "newest"
REASON_DRILL_FAILED = "drill failed: kept for inspection"
KEPT_FOR_INSPECTION = "kept for inspection"


def _format_timedelta(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if delta.microseconds or seconds % 3600:
        return str(delta)
    days, hours = divmod(seconds // 3600, 24)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "")
    return text or "0h"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups of each kind to keep; restic ``forget --keep-*`` semantics.

    Counts are ``>= 0``; ``-1`` means unlimited. ``keep_within`` keeps everything newer than
    the newest backup minus this duration: a :class:`CalendarDuration` (restic's calendar
    arithmetic, what :meth:`from_env` produces) or a :class:`datetime.timedelta` (exact elapsed
    time). A zero duration means unset. ``timezone`` is the IANA zone the buckets are cut in.
    """

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | CalendarDuration | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in config.KEEP_COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < -1:
                raise ValueError(f"{name} must be >= 0, or -1 for unlimited; got {value}")
        within = self.keep_within
        if isinstance(within, timedelta):
            if within < timedelta(0):
                raise ValueError(f"keep_within must not be negative, got {within}")
            if not within:
                object.__setattr__(self, "keep_within", None)
        elif isinstance(within, CalendarDuration):
            if within.is_zero():
                object.__setattr__(self, "keep_within", None)
        elif within is not None:
            raise TypeError(
                f"keep_within must be a timedelta, a CalendarDuration or None, got {within!r}"
            )
        if not isinstance(self.timezone, str):
            raise TypeError(f"timezone must be a str, got {self.timezone!r}")
        time_zone(self.timezone)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionPolicy:
        """The policy of ``KOTOMI_BACKUP_KEEP_*``, ``KOTOMI_BACKUP_KEEP_WITHIN`` and
        ``KOTOMI_BACKUP_TIMEZONE`` (defaults and checks: the settings table, config.py).

        An unset or empty variable takes its default (0/0/7/4/12/3, no within, UTC); a bad
        value raises ConfigError naming the variable and what it expects.
        """
        return cls(
            **{name: setting.read(environ) for name, setting in config.KEEP_COUNTS.items()},
            keep_within=config.KEEP_WITHIN.read(environ),
            timezone=config.TIMEZONE.read(environ),
        )

    @property
    def tzinfo(self) -> tzinfo:
        """The policy's time zone."""
        return time_zone(self.timezone)

    def counts(self) -> tuple[int, int, int, int, int, int]:
        """(last, hourly, daily, weekly, monthly, yearly)."""
        return (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )

    def within_text(self) -> str | None:
        """``keep_within`` as restic prints it (``2d``, ``1y2m``), or None when unset."""
        within = self.keep_within
        if within is None:
            return None
        if isinstance(within, CalendarDuration):
            return str(within)
        return _format_timedelta(within)

    def is_empty(self) -> bool:
        """True when the policy keeps nothing (every count 0 and no ``keep_within``)."""
        return self.keep_within is None and not any(self.counts())

    def describe(self) -> str:
        """One line, e.g. ``keep 7 daily, 4 weekly, 12 monthly, 3 yearly (UTC)``."""
        parts = [
            f"{'all' if count == -1 else count} {kind}"
            for kind, count in zip(_KINDS, self.counts(), strict=True)
            if count
        ]
        within = self.within_text()
        if within is not None:
            parts.append(f"all within {within} of the newest")
        if not parts:
            return f"keep nothing ({self.timezone})"
        return f"keep {', '.join(parts)} ({self.timezone})"


@dataclass(frozen=True)
class BackupRef:
    """A backup as the safety rails see it. A backup whose latest drill failed, or with a
    `problem` (e.g. ``"objects missing: kotomi.db.zst"``), fills no retention slot."""

    backup_id: str
    time: datetime
    drill_failed: bool = False
    problem: str | None = None

    @property
    def held_reasons(self) -> list[str]:
        """Why this backup is kept for inspection instead of filling a slot (empty: it is fit)."""
        held = [f"{self.problem}: {KEPT_FOR_INSPECTION}"] if self.problem else []
        if self.drill_failed:
            held.append(REASON_DRILL_FAILED)
        return held


@dataclass(frozen=True)
class RetentionDecision:
    """Whether one backup stays, and why (empty ``reasons`` when it goes).

    ``item`` is the :class:`BackupRef` when planned with :func:`plan_backups`, else None.
    """

    time: datetime
    keep: bool
    reasons: list[str] = field(default_factory=list, hash=False)
    item: BackupRef | None = None

    @property
    def backup_id(self) -> str | None:
        return None if self.item is None else self.item.backup_id


def _bucket(kind: int, local: datetime, nr: int) -> int:
    if kind == _DAILY:
        return local.year * 10000 + local.month * 100 + local.day
    if kind == _WEEKLY:
        iso = local.isocalendar()
        return iso[0] * 100 + iso[1]
    if kind == _MONTHLY:
        return local.year * 100 + local.month
    if kind == _YEARLY:
        return local.year
    if kind == _HOURLY:
        return local.year * 1000000 + local.month * 10000 + local.day * 100 + local.hour
    return nr


def _label(kind: int, local: datetime) -> str:
    if kind == _DAILY:
        return f"daily {local.year:04d}-{local.month:02d}-{local.day:02d}"
    if kind == _WEEKLY:
        iso = local.isocalendar()
        return f"weekly {iso[0]:04d}-W{iso[1]:02d}"
    if kind == _MONTHLY:
        return f"monthly {local.year:04d}-{local.month:02d}"
    if kind == _YEARLY:
        return f"yearly {local.year:04d}"
    if kind == _HOURLY:
        return f"hourly {local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}"
    return "last"


def _require_policy(policy: RetentionPolicy) -> None:
    if policy.is_empty():
        raise ValueError(
            "retention policy keeps nothing: every keep count is 0 and keep_within is unset; "
            f"set at least one of {', '.join(s.name for s in config.KEEP_COUNTS.values())} "
            f"or {config.KEEP_WITHIN.name}"
        )


def _aware(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _within_cutoff(
    newest_first: Sequence[datetime], policy: RetentionPolicy, now: datetime
) -> datetime | None:
    """Backups strictly after the returned instant are within; None means all are."""
    within = policy.keep_within
    assert within is not None
    # restic: the newest backup that is not in the future (strictly before the clock).
    latest = next((t for t in newest_first if t < now), None)
    if latest is None:
        # restic starts from Go's zero time here, so every backup counts as within.
        return None
    if isinstance(within, CalendarDuration):
        return within.before(latest, policy.tzinfo)
    try:
        return latest - within
    except OverflowError:
        return None


def _apply(
    newest_first: Sequence[datetime], policy: RetentionPolicy, now: datetime
) -> list[list[str]]:
    """The reasons to keep each backup of ``newest_first`` (sorted newest first)."""
    count = len(newest_first)
    zone = policy.tzinfo
    remaining = list(policy.counts())
    previous: list[int | None] = [None] * len(_KINDS)
    active = [kind for kind, slots in enumerate(remaining) if slots]
    within_text = policy.within_text()
    within_reason = f"within {within_text}"
    has_within = within_text is not None
    cutoff = _within_cutoff(newest_first, policy, now) if has_within else None
    oldest = count - 1
    plan: list[list[str]] = []
    for nr, instant in enumerate(newest_first):
        reasons: list[str] = []
        if has_within and (cutoff is None or instant > cutoff):
            reasons.append(within_reason)
        if active:
            local = instant.astimezone(zone)
            for kind in active:
                value = _bucket(kind, local, nr)
                last_value = previous[kind]
                if value != last_value or nr == oldest:
                    label = _label(kind, local)
                    reasons.append(label if value != last_value else f"oldest {label}")
                    previous[kind] = value
                    if remaining[kind] > 0:
                        remaining[kind] -= 1
            active = [kind for kind in active if remaining[kind]]
        plan.append(reasons)
    return plan


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else _aware(now)


def plan_retention(
    times: Iterable[datetime], policy: RetentionPolicy, now: datetime | None = None
) -> list[RetentionDecision]:
    """One decision per input time, newest first, with restic ``forget`` semantics.

    Naive times are UTC. ``now`` (default: the current time) only keeps future-dated backups
    from anchoring ``keep_within``, as restic's clock does. Equal times keep their input order.
    Raises ValueError for a policy that keeps nothing.
    """
    _require_policy(policy)
    ordered = sorted((_aware(t) for t in times), reverse=True)
    plan = _apply(ordered, policy, _now(now))
    return [
        RetentionDecision(time=t, keep=bool(reasons), reasons=reasons)
        for t, reasons in zip(ordered, plan, strict=True)
    ]


def plan_backups(
    backups: Sequence[BackupRef], policy: RetentionPolicy, now: datetime | None = None
) -> list[RetentionDecision]:
    """:func:`plan_retention` with the prune command's safety rails.

    * The newest backup is always kept (reason ``newest``).
    * A backup whose latest drill failed, or that has a ``problem`` (its objects are missing or
      changed), fills no slot: it is planned as if absent, so an older good backup takes its
      place, and it is itself kept for inspection.
    * A policy that keeps nothing raises ValueError.

    Decisions are newest first (ties broken by ``backup_id``, newest id first), each with
    ``item`` set to its :class:`BackupRef`. Duplicate ids raise ValueError.
    """
    _require_policy(policy)
    seen: set[str] = set()
    for ref in backups:
        if ref.backup_id in seen:
            raise ValueError(f"duplicate backup_id {ref.backup_id!r}")
        seen.add(ref.backup_id)
    ordered = sorted(
        ((_aware(ref.time), ref) for ref in backups),
        key=lambda pair: (pair[0], pair[1].backup_id),
        reverse=True,
    )
    good = [t for t, ref in ordered if not ref.held_reasons]
    plan = iter(_apply(good, policy, _now(now)))
    decisions: list[RetentionDecision] = []
    for index, (t, ref) in enumerate(ordered):
        reasons = ref.held_reasons or next(plan)
        if index == 0:
            reasons.insert(0, REASON_NEWEST)
        decisions.append(RetentionDecision(time=t, keep=bool(reasons), reasons=reasons, item=ref))
    return decisions
