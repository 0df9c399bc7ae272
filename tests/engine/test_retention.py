"""Retention planning: worked examples, DST, properties, and an oracle against ``restic forget``."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kotomi_backup_dagster.engine.errors import ConfigError
from kotomi_backup_dagster.retention import (
    BackupRef,
    CalendarDuration,
    RetentionDecision,
    RetentionPolicy,
    plan_backups,
    plan_retention,
)

NOW = datetime(2100, 1, 1, tzinfo=UTC)
GUIDE = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)
KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def kept(decisions: Sequence[RetentionDecision]) -> dict[datetime, list[str]]:
    return {d.time: d.reasons for d in decisions if d.keep}


def daily_year() -> list[datetime]:
    """A year of daily backups at 03:00 UTC, ending Friday 2026-11-27."""
    start = utc("2025-11-28T03:00:00")
    return [start + timedelta(days=i) for i in range(365)]


# --- worked examples -------------------------------------------------------------------------


def test_guide_policy_over_a_year_of_daily_backups() -> None:
    decisions = plan_retention(daily_year(), GUIDE, now=NOW)
    assert len(decisions) == 365
    assert [d.time for d in decisions] == sorted((d.time for d in decisions), reverse=True)
    expected = {
        "2026-11-27": ["daily 2026-11-27", "weekly 2026-W48", "monthly 2026-11", "yearly 2026"],
        "2026-11-26": ["daily 2026-11-26"],
        "2026-11-25": ["daily 2026-11-25"],
        "2026-11-24": ["daily 2026-11-24"],
        "2026-11-23": ["daily 2026-11-23"],
        "2026-11-22": ["daily 2026-11-22", "weekly 2026-W47"],
        "2026-11-21": ["daily 2026-11-21"],
        "2026-11-15": ["weekly 2026-W46"],
        "2026-11-08": ["weekly 2026-W45"],
        "2026-10-31": ["monthly 2026-10"],
        "2026-09-30": ["monthly 2026-09"],
        "2026-08-31": ["monthly 2026-08"],
        "2026-07-31": ["monthly 2026-07"],
        "2026-06-30": ["monthly 2026-06"],
        "2026-05-31": ["monthly 2026-05"],
        "2026-04-30": ["monthly 2026-04"],
        "2026-03-31": ["monthly 2026-03"],
        "2026-02-28": ["monthly 2026-02"],
        "2026-01-31": ["monthly 2026-01"],
        "2025-12-31": ["monthly 2025-12", "yearly 2025"],
        # restic >= 0.16: a kind with slots left also keeps the oldest backup.
        "2025-11-28": ["oldest yearly 2025"],
    }
    assert kept(decisions) == {utc(f"{day}T03:00:00"): r for day, r in expected.items()}
    assert all(d.reasons == [] for d in decisions if not d.keep)


def test_missed_sunday_still_gives_four_weeklies() -> None:
    times = [t for t in daily_year() if t.date().isoformat() != "2026-11-15"]
    weekly = {
        t.date().isoformat(): [r for r in reasons if r.startswith("weekly")]
        for t, reasons in kept(plan_retention(times, GUIDE, now=NOW)).items()
        if any(r.startswith("weekly") for r in reasons)
    }
    assert weekly == {
        "2026-11-27": ["weekly 2026-W48"],
        "2026-11-22": ["weekly 2026-W47"],
        "2026-11-14": ["weekly 2026-W46"],  # the Saturday stands in for the missed Sunday
        "2026-11-08": ["weekly 2026-W45"],
    }


def test_keep_last_and_hourly_labels() -> None:
    times = [utc("2026-11-27T14:05:00"), utc("2026-11-27T14:35:00"), utc("2026-11-27T13:10:00")]
    policy = RetentionPolicy(keep_last=1, keep_hourly=2)
    assert kept(plan_retention(times, policy, now=NOW)) == {
        utc("2026-11-27T14:35:00"): ["last", "hourly 2026-11-27T14"],
        utc("2026-11-27T13:10:00"): ["hourly 2026-11-27T13"],
    }


def test_unlimited_counts_keep_every_bucket() -> None:
    decisions = plan_retention(daily_year(), RetentionPolicy(keep_monthly=-1), now=NOW)
    # 13 calendar months are touched; the oldest backup is not the newest of its month, so it
    # is also kept as "oldest" (slots are never exhausted).
    assert len(kept(decisions)) == 14
    assert decisions[-1].reasons == ["oldest monthly 2025-11"]


def test_within_counts_back_from_the_newest_backup_not_from_now() -> None:
    times = daily_year()
    policy = RetentionPolicy(keep_within=CalendarDuration(days=3))
    decisions = plan_retention(times, policy, now=utc("2030-01-01T00:00:00"))
    assert sorted(kept(decisions)) == times[-3:]  # strictly newer than newest - 3d
    assert all(r == ["within 3d"] for r in kept(decisions).values())


def test_future_dated_backups_do_not_anchor_within() -> None:
    now = utc("2026-11-27T12:00:00")
    future = utc("2027-06-01T00:00:00")  # clock skew
    times = [future, now - timedelta(hours=1), now - timedelta(days=1), now - timedelta(days=3)]
    policy = RetentionPolicy(keep_within=timedelta(days=2))
    assert set(kept(plan_retention(times, policy, now=now))) == set(times[:3])


def test_within_uses_go_month_arithmetic() -> None:
    # Go: 2025-03-31 minus one month is "2025-02-31", normalised to 2025-03-03.
    newest = utc("2025-03-31T12:00:00")
    times = [
        newest,
        utc("2025-03-03T12:30:00"),
        utc("2025-03-03T11:30:00"),
        utc("2025-02-28T13:00"),
    ]
    policy = RetentionPolicy(keep_within=CalendarDuration(months=1))
    assert set(kept(plan_retention(times, policy, now=NOW))) == set(times[:2])


def test_naive_times_are_utc_and_order_is_newest_first() -> None:
    naive = [datetime(2026, 1, 1, 10), datetime(2026, 1, 2, 10)]
    decisions = plan_retention(naive, RetentionPolicy(keep_last=1), now=NOW)
    assert [d.time for d in decisions] == [utc("2026-01-02T10:00"), utc("2026-01-01T10:00")]
    assert all(d.time.tzinfo is not None for d in decisions)
    assert [d.keep for d in decisions] == [True, False]


def test_empty_input_and_empty_policy() -> None:
    assert plan_retention([], GUIDE) == []
    with pytest.raises(ValueError, match="retention policy keeps nothing"):
        plan_retention(daily_year(), RetentionPolicy())
    with pytest.raises(ValueError, match="retention policy keeps nothing"):
        plan_backups([], RetentionPolicy(keep_within=timedelta(0)))


class CountedTime(datetime):
    """A backup time that counts what planning does with it: comparisons and conversions to
    the policy's time zone, the work that grows with the number of backups."""

    comparisons = 0
    conversions = 0

    def __lt__(self, other: object) -> bool:
        CountedTime.comparisons += 1
        return super().__lt__(other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        CountedTime.comparisons += 1
        return super().__gt__(other)  # type: ignore[operator]

    def astimezone(self, tz: tzinfo | None = None) -> datetime:
        CountedTime.conversions += 1
        return super().astimezone(tz)


def test_planning_is_one_sort_and_one_zone_conversion_per_backup() -> None:
    """Planning scales as a sort: counted, not timed, so a busy machine cannot fail it (it used
    to assert 100,000 backups in under 2 s, and failed at 2.2 s on a loaded CI machine)."""
    count = 30_000
    rng = random.Random(7)
    base = int(utc("2000-01-01T00:00:00").timestamp())
    times = [CountedTime.fromtimestamp(base + rng.randrange(10**9), UTC) for _ in range(count)]
    policy = RetentionPolicy(
        keep_last=5,
        keep_hourly=48,
        keep_daily=7,
        keep_weekly=4,
        keep_monthly=-1,  # unlimited: every backup is converted to the zone and bucketed
        keep_yearly=3,
        keep_within=CalendarDuration(days=30),
        timezone="Europe/Berlin",
    )
    CountedTime.comparisons = CountedTime.conversions = 0
    decisions = plan_retention(times, policy, now=NOW)
    assert len(decisions) == count
    assert CountedTime.conversions <= count + 1  # and the newest, for keep_within
    assert CountedTime.comparisons <= count * math.ceil(math.log2(count)) + 2 * count


# --- DST ---------------------------------------------------------------------------------------


def every_half_hour(first: str, last: str) -> list[datetime]:
    t, end, out = utc(first), utc(last), []
    while t <= end:
        out.append(t)
        t += timedelta(minutes=30)
    return out


@pytest.mark.parametrize(
    ("zone", "first", "last", "expected_daily", "hours_in_day"),
    [
        (  # autumn: 2025-10-26 has 25 hours, 02:00-03:00 twice
            "Europe/Berlin",
            "2025-10-25T20:00",
            "2025-10-27T02:00",
            {
                "2025-10-27T02:00": "daily 2025-10-27",
                "2025-10-26T22:30": "daily 2025-10-26",  # 23:30 CET
                "2025-10-25T21:30": "daily 2025-10-25",  # 23:30 CEST
            },
            ("2025-10-26", 24),  # 25 hours, but the repeated hour is one hourly bucket
        ),
        (  # spring: 2025-03-30 has 23 hours
            "Europe/Berlin",
            "2025-03-29T20:00",
            "2025-03-31T02:00",
            {
                "2025-03-31T02:00": "daily 2025-03-31",
                "2025-03-30T21:30": "daily 2025-03-30",  # 23:30 CEST
                "2025-03-29T22:30": "daily 2025-03-29",  # 23:30 CET
            },
            ("2025-03-30", 23),
        ),
        (
            "America/New_York",
            "2025-11-01T20:00",
            "2025-11-03T12:00",
            {
                "2025-11-03T12:00": "daily 2025-11-03",
                "2025-11-03T04:30": "daily 2025-11-02",  # 23:30 EST
                "2025-11-02T03:30": "daily 2025-11-01",  # 23:30 EDT
            },
            ("2025-11-02", 24),
        ),
        (
            "America/New_York",
            "2025-03-08T20:00",
            "2025-03-10T12:00",
            {
                "2025-03-10T12:00": "daily 2025-03-10",
                "2025-03-10T03:30": "daily 2025-03-09",  # 23:30 EDT
                "2025-03-09T04:30": "daily 2025-03-08",  # 23:30 EST
            },
            ("2025-03-09", 23),
        ),
    ],
)
def test_day_and_hour_buckets_across_dst(
    zone: str,
    first: str,
    last: str,
    expected_daily: dict[str, str],
    hours_in_day: tuple[str, int],
) -> None:
    times = every_half_hour(first, last)
    daily = plan_retention(times, RetentionPolicy(keep_daily=3, timezone=zone), now=NOW)
    assert kept(daily) == {utc(t): [r] for t, r in expected_daily.items()}

    hourly = plan_retention(times, RetentionPolicy(keep_hourly=-1, timezone=zone), now=NOW)
    day, count = hours_in_day
    labels = [r for d in hourly for r in d.reasons if r.startswith(f"hourly {day}T")]
    assert len(labels) == len(set(labels)) == count


def test_repeated_autumn_hour_is_one_hourly_bucket() -> None:
    times = [utc("2025-10-26T00:10"), utc("2025-10-26T00:40"), utc("2025-10-26T01:10")]
    policy = RetentionPolicy(keep_hourly=5, timezone="Europe/Berlin")
    # 02:10 CEST, 02:40 CEST and 02:10 CET are all local hour 02; slots remain, so the oldest
    # is kept too (restic >= 0.16).
    assert kept(plan_retention(times, policy, now=NOW)) == {
        times[2]: ["hourly 2025-10-26T02"],
        times[0]: ["oldest hourly 2025-10-26T02"],
    }


def test_within_days_are_calendar_days_in_the_policy_zone() -> None:
    newest = utc("2025-10-26T11:00")  # 12:00 CET; one calendar day earlier is 12:00 CEST
    times = [newest, utc("2025-10-25T10:30"), utc("2025-10-25T09:30")]
    calendar = RetentionPolicy(keep_within=CalendarDuration(days=1), timezone="Europe/Berlin")
    assert set(kept(plan_retention(times, calendar, now=NOW))) == set(times[:2])
    exact = RetentionPolicy(keep_within=timedelta(days=1), timezone="Europe/Berlin")
    assert set(kept(plan_retention(times, exact, now=NOW))) == {newest}
    assert kept(plan_retention(times, exact, now=NOW))[newest] == ["within 1d"]


def test_within_cutoff_in_a_repeated_hour_resolves_like_go() -> None:
    # Newest 02:40 CET on 2025-10-27; minus one day is the ambiguous 02:40 on 2025-10-26, which
    # Go (east of Greenwich) resolves to the later instant, 02:40 CET = 01:40Z.
    times = [utc("2025-10-27T01:40"), utc("2025-10-26T01:50"), utc("2025-10-26T00:45")]
    policy = RetentionPolicy(keep_within=CalendarDuration(days=1), timezone="Europe/Berlin")
    assert set(kept(plan_retention(times, policy, now=NOW))) == set(times[:2])


# --- policy ----------------------------------------------------------------------------------


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="keep_daily must be >= 0, or -1"):
        RetentionPolicy(keep_daily=-2)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        RetentionPolicy(keep_daily=1, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="keep_within must not be negative"):
        RetentionPolicy(keep_within=timedelta(hours=-1))
    assert RetentionPolicy(keep_within=timedelta(0)) == RetentionPolicy()
    assert RetentionPolicy(keep_within=CalendarDuration()).is_empty()
    assert RetentionPolicy().is_empty()
    assert not RetentionPolicy(keep_within=timedelta(hours=1)).is_empty()
    assert not RetentionPolicy(keep_last=-1).is_empty()


def test_describe() -> None:
    assert GUIDE.describe() == "keep 7 daily, 4 weekly, 12 monthly, 3 yearly (UTC)"
    policy = RetentionPolicy(
        keep_last=-1, keep_within=CalendarDuration(years=1, days=2), timezone="Europe/Berlin"
    )
    assert policy.describe() == "keep all last, all within 1y2d of the newest (Europe/Berlin)"
    assert RetentionPolicy().describe() == "keep nothing (UTC)"


def test_from_env_defaults_and_values() -> None:
    assert RetentionPolicy.from_env({}) == GUIDE
    policy = RetentionPolicy.from_env(
        {
            "KOTOMI_BACKUP_KEEP_LAST": "2",
            "KOTOMI_BACKUP_KEEP_HOURLY": " 24 ",
            "KOTOMI_BACKUP_KEEP_DAILY": "",
            "KOTOMI_BACKUP_KEEP_WEEKLY": "0",
            "KOTOMI_BACKUP_KEEP_MONTHLY": "-1",
            "KOTOMI_BACKUP_KEEP_YEARLY": "5",
            "KOTOMI_BACKUP_KEEP_WITHIN": "1y2m3d4h",
            "KOTOMI_BACKUP_TIMEZONE": "Europe/Berlin",
        }
    )
    assert policy == RetentionPolicy(
        keep_last=2,
        keep_hourly=24,
        keep_daily=7,
        keep_weekly=0,
        keep_monthly=-1,
        keep_yearly=5,
        keep_within=CalendarDuration(years=1, months=2, days=3, hours=4),
        timezone="Europe/Berlin",
    )


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("KOTOMI_BACKUP_KEEP_DAILY", "seven", "KOTOMI_BACKUP_KEEP_DAILY 'seven': give a whole"),
        ("KOTOMI_BACKUP_KEEP_YEARLY", "-2", "KOTOMI_BACKUP_KEEP_YEARLY '-2': give a whole"),
        ("KOTOMI_BACKUP_KEEP_LAST", "1.5", "KOTOMI_BACKUP_KEEP_LAST '1.5': give a whole"),
        ("KOTOMI_BACKUP_KEEP_WITHIN", "2w", "KOTOMI_BACKUP_KEEP_WITHIN '2w': give a duration"),
        ("KOTOMI_BACKUP_KEEP_WITHIN", "48", "KOTOMI_BACKUP_KEEP_WITHIN '48': give a duration"),
        ("KOTOMI_BACKUP_KEEP_WITHIN", "-1d", "KOTOMI_BACKUP_KEEP_WITHIN '-1d': give a duration"),
        ("KOTOMI_BACKUP_KEEP_WITHIN", "1d2d", "KOTOMI_BACKUP_KEEP_WITHIN '1d2d': give a duration"),
        ("KOTOMI_BACKUP_TIMEZONE", "Berlin", "KOTOMI_BACKUP_TIMEZONE 'Berlin': use an IANA time"),
        ("KOTOMI_BACKUP_TIMEZONE", "Europe", "KOTOMI_BACKUP_TIMEZONE 'Europe': use an IANA time"),
    ],
)
def test_from_env_rejects_bad_values(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RetentionPolicy.from_env({var: value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d", CalendarDuration(days=2)),
        ("36h", CalendarDuration(hours=36)),
        ("4h1d", CalendarDuration(days=1, hours=4)),
        ("1y2m3d4h", CalendarDuration(years=1, months=2, days=3, hours=4)),
    ],
)
def test_calendar_duration_parse(text: str, expected: CalendarDuration) -> None:
    assert CalendarDuration.parse(text) == expected
    assert CalendarDuration.parse(str(expected)) == expected


# --- safety rails ----------------------------------------------------------------------------


def ref(day: int, drill_failed: bool = False) -> BackupRef:
    t = utc(f"2026-11-{day:02d}T03:00:00")
    return BackupRef(f"{t:%Y%m%dT%H%M%SZ}-{day:06x}", t, drill_failed)


def test_failed_drill_fills_no_slot_and_is_kept_for_inspection() -> None:
    backups = [ref(25), ref(27, drill_failed=True), ref(26, drill_failed=True), ref(24)]
    decisions = plan_backups(backups, RetentionPolicy(keep_daily=1))
    assert [(d.backup_id, d.keep, d.reasons) for d in decisions] == [
        (ref(27).backup_id, True, ["newest", "drill failed: kept for inspection"]),
        (ref(26).backup_id, True, ["drill failed: kept for inspection"]),
        (ref(25).backup_id, True, ["daily 2026-11-25"]),
        (ref(24).backup_id, False, []),
    ]
    assert all(d.item is not None and d.item.time == d.time for d in decisions)


def test_a_backup_with_a_problem_fills_no_slot_like_a_failed_drill() -> None:
    missing = BackupRef(ref(27).backup_id, ref(27).time, problem="objects missing: kotomi.db.zst")
    both = BackupRef(ref(26).backup_id, ref(26).time, True, "objects changed: kotomi.db.zst")
    decisions = plan_backups([ref(25), missing, both, ref(24)], RetentionPolicy(keep_daily=1))
    assert [(d.backup_id, d.keep, d.reasons) for d in decisions] == [
        (
            ref(27).backup_id,
            True,
            ["newest", "objects missing: kotomi.db.zst: kept for inspection"],
        ),
        (
            ref(26).backup_id,
            True,
            [
                "objects changed: kotomi.db.zst: kept for inspection",
                "drill failed: kept for inspection",
            ],
        ),
        (ref(25).backup_id, True, ["daily 2026-11-25"]),
        (ref(24).backup_id, False, []),
    ]


def test_newest_is_always_kept_and_duplicates_are_refused() -> None:
    decisions = plan_backups([ref(20), ref(21)], RetentionPolicy(keep_daily=1))
    assert decisions[0].reasons == ["newest", "daily 2026-11-21"]
    assert not decisions[1].keep
    assert len({*decisions}) == 2  # decisions are hashable despite the list of reasons
    with pytest.raises(ValueError, match="duplicate backup_id"):
        plan_backups([ref(20), ref(20)], GUIDE)
    with pytest.raises(ValueError, match="retention policy keeps nothing: "):
        plan_backups([ref(20)], RetentionPolicy())


# --- properties ------------------------------------------------------------------------------

ANCHORS = [
    utc("2025-10-26T03:30"),  # Berlin autumn DST
    utc("2025-03-30T03:30"),  # Berlin spring DST
    utc("2025-11-02T07:30"),  # New York autumn DST
    utc("2025-01-01T00:30"),  # a year boundary
    utc("2021-01-04T12:00"),  # ISO week 2021-W01 starts; 2020 has 53 ISO weeks
]
STEPS = [1, 60, 1800, 3600, 5 * 3600, 86400, 7 * 86400, 31 * 86400, 365 * 86400]


@st.composite
def time_series(draw: st.DrawFn, max_size: int = 40) -> list[datetime]:
    t = draw(st.sampled_from(ANCHORS))
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(STEPS), st.integers(0, 3), st.integers(0, 59)),
            min_size=1,
            max_size=max_size,
        )
    )
    out = []
    for step, multiple, jitter in steps:
        t -= timedelta(seconds=step * multiple + jitter)
        out.append(t)
    return draw(st.permutations(out))


counts = st.integers(min_value=-1, max_value=5)
withins = st.one_of(
    st.none(),
    st.builds(
        CalendarDuration,
        years=st.integers(0, 1),
        months=st.integers(0, 2),
        days=st.integers(0, 10),
        hours=st.integers(0, 48),
    ),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=withins,
    timezone=st.sampled_from(ZONES),
).filter(lambda p: not p.is_empty())

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bucket(kind: str, t: datetime, zone: str, nr: int) -> str:
    local = t.astimezone(ZoneInfo(zone))
    year, week, _ = local.isocalendar()
    return {
        "last": str(nr),
        "hourly": local.strftime("%Y-%m-%dT%H"),
        "daily": local.strftime("%Y-%m-%d"),
        "weekly": f"{year}-W{week:02d}",
        "monthly": local.strftime("%Y-%m"),
        "yearly": f"{local.year}",
    }[kind]


@PROPERTY
@given(times=time_series(), policy=policies)
def test_property_buckets_match_a_reference(times: list[datetime], policy: RetentionPolicy) -> None:
    decisions = plan_retention(times, policy, now=NOW)
    assert len(decisions) == len(times)
    assert decisions[0].keep  # the newest backup is always kept
    ordered = [d.time for d in decisions]
    assert ordered == sorted(times, reverse=True)
    for kind, slots in zip(KINDS, policy.counts(), strict=True):
        values = [bucket(kind, t, policy.timezone, nr) for nr, t in enumerate(ordered)]
        firsts = [i for i, v in enumerate(values) if v not in values[:i]]
        regular = firsts if slots == -1 else firsts[:slots]
        expected = {i: kind if kind == "last" else f"{kind} {values[i]}" for i in regular}
        oldest = len(ordered) - 1
        if slots and oldest not in firsts and (slots == -1 or len(firsts) < slots):
            expected[oldest] = f"oldest {kind} {values[oldest]}"
        actual = {
            i: r
            for i, d in enumerate(decisions)
            for r in d.reasons
            if r.split()[0] == kind or r.startswith(f"oldest {kind} ")
        }
        # exactly one backup per filled bucket, at most N buckets, the N newest buckets
        assert actual == expected, kind
    within = [any(r.startswith("within ") for r in d.reasons) for d in decisions]
    if policy.keep_within is None:
        assert not any(within)
    else:
        assert within[0]
        assert within == sorted(within, reverse=True)  # a prefix of the newest-first list
        if isinstance(policy.keep_within, timedelta):
            assert within == [t > ordered[0] - policy.keep_within for t in ordered]
    assert all(d.keep == bool(d.reasons) for d in decisions)


@PROPERTY
@given(times=time_series(), policy=policies)
def test_property_idempotent(times: list[datetime], policy: RetentionPolicy) -> None:
    first = [d for d in plan_retention(times, policy, now=NOW) if d.keep]
    again = plan_retention([d.time for d in first], policy, now=NOW)
    assert all(d.keep for d in again)
    assert [d.reasons for d in again] == [d.reasons for d in first]


@PROPERTY
@given(
    times=time_series(),
    policy=policies,
    field=st.sampled_from([*(f"keep_{k}" for k in KINDS), "keep_within"]),
    unlimited=st.booleans(),
)
def test_property_more_slots_never_remove_a_kept_backup(
    times: list[datetime], policy: RetentionPolicy, field: str, unlimited: bool
) -> None:
    if field == "keep_within":
        within = policy.keep_within
        if within is None:
            bigger: timedelta | CalendarDuration = CalendarDuration(days=1)
        elif isinstance(within, timedelta):
            bigger = within + timedelta(hours=1)
        else:
            bigger = CalendarDuration(within.years, within.months, within.days + 1, within.hours)
        looser = RetentionPolicy(**{**policy.__dict__, "keep_within": bigger})
    else:
        value = getattr(policy, field)
        new = -1 if unlimited or value == -1 else value + 1
        looser = RetentionPolicy(**{**policy.__dict__, field: new})
    before = plan_retention(times, policy, now=NOW)
    after = plan_retention(times, looser, now=NOW)
    assert [d.time for d in before] == [d.time for d in after]
    assert all(b.keep <= a.keep for b, a in zip(before, after, strict=True))


@PROPERTY
@given(times=time_series(), policy=policies, seed=st.integers(0, 2**32))
def test_property_input_order_does_not_matter(
    times: list[datetime], policy: RetentionPolicy, seed: int
) -> None:
    shuffled = list(times)
    random.Random(seed).shuffle(shuffled)
    assert plan_retention(shuffled, policy, now=NOW) == plan_retention(times, policy, now=NOW)


@PROPERTY
@given(
    times=time_series().map(lambda ts: sorted(set(ts))),
    policy=policies,
    data=st.data(),
)
def test_property_rails(
    times: list[datetime], policy: RetentionPolicy, data: st.DataObject
) -> None:
    failed = data.draw(st.lists(st.booleans(), min_size=len(times), max_size=len(times)))
    backups = [
        BackupRef(f"{t:%Y%m%dT%H%M%SZ}-{i:06x}", t, bad)
        for i, (t, bad) in enumerate(zip(times, failed, strict=True))
    ]
    decisions = plan_backups(data.draw(st.permutations(backups)), policy, now=NOW)
    assert [d.time for d in decisions] == sorted(times, reverse=True)
    assert decisions[0].keep and decisions[0].reasons[0] == "newest"
    good = [d for d in decisions if d.item is not None and not d.item.drill_failed]
    bad = [d for d in decisions if d.item is not None and d.item.drill_failed]
    assert len(good) + len(bad) == len(times)
    assert all(d.keep and d.reasons[-1] == "drill failed: kept for inspection" for d in bad)
    reference = plan_retention([d.time for d in good], policy, now=NOW)
    stripped = [[r for r in d.reasons if r != "newest"] for d in good]
    assert stripped == [d.reasons for d in reference]


# --- oracle: the real restic binary ----------------------------------------------------------


def restic_binary() -> str:
    binary = shutil.which("restic")
    if binary is None:
        pytest.fail(
            "the restic oracle test needs the restic binary on PATH "
            "(Debian/Ubuntu: apt-get install -y restic)"
        )
    return binary


def restic_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(part) for part in match.groups())


def berlin_series() -> list[datetime]:
    fixed = [
        "2025-10-27T01:40",  # newest: 02:40 CET; 1d earlier is an ambiguous wall time
        "2025-10-27T00:30",
        "2025-10-26T23:10",  # 00:10 on the 27th, local
        "2025-10-26T22:50",  # 23:50 on the 26th, local
        "2025-10-26T12:00",
        "2025-10-26T01:50",  # 02:50 CET
        "2025-10-26T01:10",  # 02:10 CET
        "2025-10-26T00:40",  # 02:40 CEST
        "2025-10-26T00:10",  # 02:10 CEST
        "2025-10-25T23:30",
        "2025-10-25T21:50",
        "2025-10-25T01:30",
        "2025-10-25T00:20",
        "2025-10-20T10:00",
        "2025-10-19T10:00",
        "2025-10-13T10:00",
        "2025-03-30T01:30",  # 03:30 CEST
        "2025-03-30T00:30",  # 01:30 CET
        "2025-03-29T23:30",  # 00:30 CET on the 30th
    ]
    rng = random.Random(20251026)
    start, span = utc("2022-06-01T00:00").timestamp(), 3 * 365 * 86400
    extra = [datetime.fromtimestamp(int(start + rng.random() * span), UTC) for _ in range(8)]
    return [utc(t) for t in fixed] + extra


NEW_YORK = [
    utc(t)
    for t in (
        "2025-11-03T12:00",
        "2025-11-03T05:01",  # 00:01 EST on the 3rd
        "2025-11-03T04:59",  # 23:59 EST on the 2nd
        "2025-11-02T06:30",  # 01:30 EST
        "2025-11-02T05:30",  # 01:30 EDT
        "2025-11-02T04:01",  # 00:01 EDT on the 2nd
        "2025-11-02T03:59",  # 23:59 EDT on the 1st
        "2025-03-09T07:30",  # 03:30 EDT
        "2025-03-09T06:30",  # 01:30 EST
    )
]

MONTH_END = [
    utc(t)
    for t in (
        "2025-03-31T10:00",  # 12:00 CEST; 1m earlier is "02-31" = 03-03 12:00 CET
        "2025-03-10T09:00",
        "2025-03-03T11:30",
        "2025-03-03T10:30",
        "2025-02-28T12:00",
    )
]

SERIES: dict[str, tuple[str, list[datetime]]] = {
    "berlin": ("Europe/Berlin", berlin_series()),
    "monthend": ("Europe/Berlin", MONTH_END),
    "newyork": ("America/New_York", NEW_YORK),
}

ORACLE_POLICIES = [
    RetentionPolicy(
        keep_last=2, keep_hourly=4, keep_daily=3, keep_weekly=2, keep_monthly=3, keep_yearly=2
    ),
    RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3),
    RetentionPolicy(keep_within=CalendarDuration(days=2), keep_monthly=2),
    RetentionPolicy(keep_within=CalendarDuration(days=1), keep_last=1),
    RetentionPolicy(keep_within=CalendarDuration(months=1), keep_hourly=3),
    RetentionPolicy(keep_within=CalendarDuration(years=1, months=1, days=2, hours=5)),
    RetentionPolicy(keep_hourly=50, keep_weekly=30),
]
UNLIMITED_POLICY = RetentionPolicy(keep_daily=-1, keep_yearly=-1, keep_within=timedelta(hours=36))


def fixed_offset_zone(t: datetime, zone: str) -> str:
    """A TZ for restic's --time that names ``t`` unambiguously (also in a repeated hour)."""
    offset = t.astimezone(ZoneInfo(zone)).utcoffset()
    assert offset is not None and offset.total_seconds() % 3600 == 0
    hours = int(offset.total_seconds() // 3600)
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"


def restic_flags(policy: RetentionPolicy) -> list[str]:
    flags = [
        f"--keep-{name}={count}"
        for name, count in zip(
            ("last", "hourly", "daily", "weekly", "monthly", "yearly"), policy.counts(), strict=True
        )
        if count
    ]
    if policy.keep_within is not None:
        flags.append(f"--keep-within={policy.within_text()}")
    return flags


def as_restic_reason(reason: str) -> str:
    if reason.startswith("within "):
        return reason
    words = reason.split()
    kind = " ".join(words[:2]) if words[0] == "oldest" else words[0]
    return f"{kind} snapshot"


def use_cheap_key(binary: str, env: dict[str, str]) -> None:
    """Swap the repository's key file for one with cheap scrypt parameters (test speed only).

    restic calibrates scrypt to about 0.5 s of CPU and pays it on every command; 40 backups
    would then take most of a minute. The replacement wraps the same master key in restic's
    documented key format (scrypt -> AES-256-CTR + Poly1305-AES). Anything unexpected puts the
    original key back, so this only ever changes the speed, never what is compared.
    """
    keys = Path(env["RESTIC_REPOSITORY"]) / "keys"
    originals = {path: path.read_bytes() for path in keys.iterdir()}
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.poly1305 import Poly1305

        master = subprocess.run(
            [binary, "cat", "masterkey"], env=env, capture_output=True, check=True
        ).stdout
        salt, iv, (n, r, p) = os.urandom(64), os.urandom(16), (1024, 8, 1)
        derived = hashlib.scrypt(
            env["RESTIC_PASSWORD"].encode(), salt=salt, n=n, r=r, p=p, dklen=64
        )
        encryptor = Cipher(algorithms.AES(derived[:32]), modes.CTR(iv)).encryptor()
        sealed = encryptor.update(master) + encryptor.finalize()
        nonce_encryptor = Cipher(algorithms.AES(derived[32:48]), modes.ECB()).encryptor()
        mac_key = derived[48:64] + nonce_encryptor.update(iv) + nonce_encryptor.finalize()
        tag = Poly1305.generate_tag(mac_key, sealed)
        key = {
            "created": "2025-01-01T00:00:00Z",
            "username": "oracle",
            "hostname": "oracle",
            "kdf": "scrypt",
            "N": n,
            "r": r,
            "p": p,
            "salt": base64.b64encode(salt).decode(),
            "data": base64.b64encode(iv + sealed + tag).decode(),
        }
        blob = json.dumps(key).encode()
        for path in originals:
            path.unlink()
        (keys / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
        subprocess.run([binary, "cat", "config"], env=env, capture_output=True, check=True)
    except Exception:
        for path in keys.iterdir():
            path.unlink()
        for path, blob in originals.items():
            path.write_bytes(blob)


@pytest.fixture(scope="module")
def restic_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    binary = restic_binary()
    root = tmp_path_factory.mktemp("restic")
    (root / "data").mkdir()
    (root / "data" / "kotomi.db").write_bytes(b"tiny")
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(root / "repo"),
        "RESTIC_PASSWORD": "oracle",
        "RESTIC_CACHE_DIR": str(root / "cache"),
    }
    subprocess.run([binary, "init", "-q"], env=env, check=True, capture_output=True)
    use_cheap_key(binary, env)

    def backup(host: str, zone: str, t: datetime) -> None:
        tz = fixed_offset_zone(t, zone)
        wall = t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        subprocess.run(
            [binary, "backup", "-q", "--host", host, "--time", wall, "data/kotomi.db"],
            env={**env, "TZ": tz},
            cwd=root,
            check=True,
            capture_output=True,
        )

    # One at a time: concurrent restic 0.14 backups race on each other's lock files and can
    # then sit in a retry backoff for minutes.
    for host, (zone, times) in SERIES.items():
        for t in times:
            backup(host, zone, t)
    return binary, env


def restic_forget(
    binary: str, env: dict[str, str], policy: RetentionPolicy, zone: str, hosts: Sequence[str]
) -> dict[str, dict[datetime, list[str]]]:
    """Per host: {snapshot time: restic's reasons}, an empty list for a removed snapshot."""
    command = [binary, "--no-lock", "forget", "--dry-run", "--json", *restic_flags(policy)]
    for host in hosts:
        command += ["--host", host]
    done = subprocess.run(
        command, env={**env, "TZ": zone}, capture_output=True, text=True, check=True
    )
    result: dict[str, dict[datetime, list[str]]] = {}
    for group in json.loads(done.stdout):
        plan: dict[datetime, list[str]] = {}
        for snap, reason in zip(group["keep"] or [], group["reasons"] or [], strict=True):
            assert snap["time"] == reason["snapshot"]["time"]
            plan[datetime.fromisoformat(snap["time"])] = list(reason["matches"])
        for snap in group["remove"] or []:
            plan[datetime.fromisoformat(snap["time"])] = []
        result[group["host"]] = plan
    return result


@pytest.mark.slow
def test_oracle_against_restic_forget(restic_repo: tuple[str, dict[str, str]]) -> None:
    binary, env = restic_repo
    version = restic_version(binary)
    modern = version >= (0, 16, 0)  # -1 = unlimited and the "oldest" rule arrived in 0.16
    policies = [*ORACLE_POLICIES, *([UNLIMITED_POLICY] if modern else [])]
    runs = [
        (policy, zone, [h for h, (z, _) in SERIES.items() if z == zone])
        for policy in policies
        for zone in sorted({z for z, _ in SERIES.values()})
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda run: restic_forget(binary, env, *run), runs))

    compared = 0
    for (policy, zone, hosts), output in zip(runs, outputs, strict=True):
        assert sorted(output) == sorted(hosts)
        for host in hosts:
            times = SERIES[host][1]
            theirs = output[host]
            assert set(theirs) == set(times), "restic recorded other times than asked for"
            ours: dict[datetime, list[str]] = {}
            ours_policy = RetentionPolicy(**{**policy.__dict__, "timezone": zone})
            for decision in plan_retention(times, ours_policy):
                reasons = [as_restic_reason(r) for r in decision.reasons]
                if not modern:  # restic < 0.16 has no "oldest" rule
                    reasons = [r for r in reasons if not r.startswith("oldest ")]
                ours[decision.time] = reasons
            assert ours == theirs, f"{ours_policy.describe()} on {host} (restic {version})"
            compared += 1
    assert compared == len(policies) * len(SERIES)
