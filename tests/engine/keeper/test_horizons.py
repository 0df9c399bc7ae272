"""Tier horizons: the lock a kept backup needs lasts until retention would let go of it.

The oracle is the retention planner itself: a regular series of backups is extended, one
backup per step, until the planner stops keeping a backup for a tier; the horizon computed
from its reasons must be exactly when that happens (for regular backups), and never later (a
lock must not end while the tier keeps the backup). While a backup's bucket is still open
(a newer backup in the same day, week... takes its slot), its need is rolling instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotomi_backup_dagster.engine.calendar_time import CalendarDuration
from kotomi_backup_dagster.engine.keeper.horizons import backup_need, bucket_end
from kotomi_backup_dagster.retention import RetentionPolicy, plan_retention

START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
FLOOR = timedelta(days=1)


def has_tier(reasons: list[str], kind: str) -> bool:
    return any(kind in r.split()[:2] for r in reasons)


def kept_until(
    times: list[datetime], target: datetime, policy: RetentionPolicy, step: timedelta, kind: str
) -> datetime:
    """Add a backup every `step` after the series until `target` no longer has a `kind`
    reason; the time of the backup that pushed it out."""
    series = list(times)
    moment = series[-1]
    for _ in range(2000):
        moment += step
        series.append(moment)
        decision = next(d for d in plan_retention(series, policy) if d.time == target)
        if not has_tier(decision.reasons, kind):
            return moment
    raise AssertionError("never let go")


@pytest.mark.parametrize(
    ("kind", "count", "step", "before"),
    [
        ("hourly", 24, timedelta(minutes=15), 8),
        ("daily", 7, timedelta(hours=6), 9),
        ("weekly", 4, timedelta(days=1), 10),
        ("monthly", 12, timedelta(days=1), 40),
        ("yearly", 3, timedelta(days=7), 60),
    ],
)
def test_the_last_backup_of_a_closed_bucket_is_locked_until_its_tier_lets_go(
    kind: str, count: int, step: timedelta, before: int
) -> None:
    policy = RetentionPolicy(**{f"keep_{kind}": count})
    series = [START + step * n for n in range(before)]
    # The last backup of a bucket: the next one falls in the next bucket.
    target = next(t for t, after in pairwise(series) if bucket_end(kind, t, 1, UTC) <= after)
    times = [t for t in series if t <= target]
    now = next(t for t in series if t > target)  # the bucket has closed
    decision = next(d for d in plan_retention([*times, now], policy) if d.time == target)
    assert has_tier(decision.reasons, kind), decision.reasons
    need = backup_need(decision.reasons, target, policy, now, timedelta(0))
    assert not need.rolling and kind in need.reason
    let_go = kept_until([*times, now], target, policy, step, kind)
    assert need.until <= let_go < need.until + step  # the first backup at or after it


def test_the_newest_backup_of_an_open_bucket_is_rolling_not_locked_for_years() -> None:
    """The newest backup fills daily, weekly, monthly and yearly slots while its day is
    running; the next backup of the same day takes them all. Locking it to the yearly
    horizon would keep every day's newest backup for three years."""
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)
    times = [START + timedelta(minutes=15 * n) for n in range(8)]
    [newest, *_] = plan_retention(times, policy)
    assert {r.split()[0] for r in newest.reasons} >= {"daily", "weekly", "monthly", "yearly"}
    now = times[-1] + timedelta(minutes=5)
    need = backup_need(newest.reasons, newest.time, policy, now, FLOOR)
    assert need.rolling and need.until == now + FLOOR


@settings(max_examples=30, deadline=None)
@given(
    hour=st.integers(0, 23),
    days=st.integers(1, 10),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
)
def test_a_daily_horizon_is_never_before_the_tier_lets_go(hour: int, days: int, zone: str) -> None:
    """Daily backups at any hour in any zone: the lock never ends while the tier keeps it."""
    policy = RetentionPolicy(keep_daily=days, timezone=zone)
    first = START.replace(hour=hour)
    times = [first + timedelta(days=n) for n in range(4)]
    target, now = times[-2], times[-1]
    decision = next(d for d in plan_retention(times, policy) if d.time == target)
    need = backup_need(decision.reasons, target, policy, now, timedelta(0))
    if days == 1:  # the newest day took the only slot: not kept at all
        assert not decision.reasons
        return
    assert not need.rolling
    assert need.until <= kept_until(times, target, policy, timedelta(days=1), "daily")
    assert need.until > now


def test_reasons_without_an_end_of_their_own_are_rolling_and_reach_past_now() -> None:
    policy = RetentionPolicy(keep_last=3, keep_daily=-1)
    now = START + timedelta(days=30)
    for reasons in (
        ["last"],
        ["newest"],
        ["daily 2026-01-01"],  # unlimited daily slots: the tier never lets go
        ["drill failed: kept for inspection"],
    ):
        need = backup_need(reasons, START, policy, now, FLOOR)
        assert need.rolling and need.until == now + FLOOR, reasons


def test_within_lasts_the_duration_after_the_backup_and_the_longest_reason_wins() -> None:
    policy = RetentionPolicy(keep_within=CalendarDuration(months=1), keep_daily=7)
    later = START + timedelta(days=2)
    need = backup_need(["within 1m", "daily 2026-01-01"], START, policy, later, timedelta(0))
    assert need.until == datetime(2026, 2, 1, 2, 0, tzinfo=UTC) and need.reason == "within 1m"
    policy = RetentionPolicy(keep_within=timedelta(days=2), keep_monthly=12)
    need = backup_need(
        ["within 2d", "monthly 2026-01"], START, policy, START + timedelta(days=40), timedelta(0)
    )
    assert need.until == datetime(2027, 1, 1, tzinfo=UTC) and need.reason == "monthly 2026-01"


def test_bucket_ends_follow_the_calendar_in_the_policy_zone() -> None:
    berlin = RetentionPolicy(timezone="Europe/Berlin").tzinfo
    # 23:30 UTC on 2026-03-28 is already the 29th (a Sunday) in Berlin; weeks start on Monday.
    moment = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert bucket_end("daily", moment, 1, berlin) == datetime(2026, 3, 30, tzinfo=berlin)
    assert bucket_end("weekly", moment, 1, berlin) == datetime(2026, 3, 30, tzinfo=berlin)
    assert bucket_end("monthly", moment, 12, UTC) == datetime(2027, 3, 1, tzinfo=UTC)
    assert bucket_end("yearly", moment, 3, UTC) == datetime(2029, 1, 1, tzinfo=UTC)
    assert bucket_end("hourly", moment, 2, UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
