"""engine/health.py and engine/alert_state.py over plain data: thresholds, findings, and
alerts that fire once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotomi_backup_dagster.engine.alert_state import (
    OpenAlert,
    Recovery,
    advance,
    dump_state,
    load_state,
    reconcile,
)
from kotomi_backup_dagster.engine.errors import ConfigError
from kotomi_backup_dagster.engine.health import (
    BACKUP_DAMAGED,
    DRILL_FAILED,
    DRILL_OVERDUE,
    SIZE_DROP,
    STALE,
    UNLISTABLE,
    DestinationState,
    Finding,
    Thresholds,
    default_stale_after,
    evaluate,
    inspect_destination,
)
from kotomi_backup_dagster.engine.layout import DrillRecord
from kotomi_backup_dagster.engine.manifest import ArchiveInfo, Manifest, VerifyInfo, rfc3339

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
URL = "file:///srv/backups"
URL2 = "s3://bucket/prefix"


def manifest(hours_ago: float, size: int = 2_000_000, rows: int = 1000, n: int = 0) -> Manifest:
    created = NOW - timedelta(hours=hours_ago)
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{n:06x}"
    return Manifest(
        backup_id=backup_id,
        name="kotomi",
        created_at=rfc3339(created),
        db_sha256="0" * 64,
        db_size=size,
        page_size=4096,
        page_count=size // 4096,
        sqlite_version="3.45.0",
        archive=ArchiveInfo(
            key=f"kotomi/{backup_id}/kotomi.db.zst", size=size // 3, sha256="1" * 64
        ),
        verify=VerifyInfo(mode="quick", result="ok"),
        tables={"comments": rows, "pages": 50},
        tool_version="0.1.0",
    )


def drill(m: Manifest, hours_ago: float, ok: bool = True) -> DrillRecord:
    return DrillRecord(
        backup_id=m.backup_id,
        drilled_at=rfc3339(NOW - timedelta(hours=hours_ago)),
        ok=ok,
        problems=[] if ok else ["integrity_check: row 12 missing from index\nmore"],
        rto_seconds=1.5,
        db_size=m.db_size,
        tool_version="0.1.0",
        checks={},
    )


def dest(*backups: Manifest, drills: list[DrillRecord] = (), url: str = URL) -> DestinationState:  # type: ignore[assignment]
    return DestinationState(url=url, backups=backups, drills={d.backup_id: d for d in drills})


def kinds(findings: tuple[Finding, ...] | list[Finding]) -> list[str]:
    return sorted(f.kind for f in findings)


TH = Thresholds()


def test_default_stale_threshold_is_one_and_a_half_intervals_and_at_least_two_hours_more() -> None:
    assert default_stale_after(timedelta(days=1)) == timedelta(hours=36)
    assert default_stale_after(timedelta(hours=1)) == timedelta(hours=3)
    assert default_stale_after(timedelta(days=7)) == timedelta(days=10.5)
    assert Thresholds.from_env({}).stale_after == timedelta(hours=36)


def test_thresholds_from_env_and_bad_values_name_the_variable() -> None:
    th = Thresholds.from_env(
        {
            "KOTOMI_BACKUP_STALE_HOURS": "26",
            "KOTOMI_BACKUP_DRILL_OVERDUE_DAYS": "3.5",
            "KOTOMI_BACKUP_SIZE_DROP_RATIO": "0.25",
        }
    )
    assert th == Thresholds(timedelta(hours=26), timedelta(days=3.5), 0.25)
    for var, value in [
        ("KOTOMI_BACKUP_STALE_HOURS", "soon"),
        ("KOTOMI_BACKUP_DRILL_OVERDUE_DAYS", "-1"),
        ("KOTOMI_BACKUP_SIZE_DROP_RATIO", "1.5"),
        ("KOTOMI_BACKUP_STALE_HOURS", "inf"),
    ]:
        with pytest.raises(ConfigError, match=var):
            Thresholds.from_env({var: value})


def test_a_healthy_database_has_no_finding() -> None:
    old, new = manifest(25, n=1), manifest(1, n=2)
    report = evaluate("kotomi", [dest(new, old, drills=[drill(new, 0.5)])], TH, NOW)
    assert report.findings == ()


def test_thresholds_under_an_hour_read_in_minutes_not_as_zero_hours() -> None:
    """An every-15-minutes schedule: KOTOMI_BACKUP_STALE_HOURS=0.3 (18 min)."""
    th = Thresholds.from_env({"KOTOMI_BACKUP_STALE_HOURS": "0.3"})
    (stale,) = evaluate("kotomi", [dest(manifest(0.75))], th, NOW).findings
    assert stale.problem.endswith("is 45 min old (limit 18 min)"), stale.problem
    assert th.describe().startswith("stale after 18 min,")
    assert "0.0 h" not in th.describe()


def test_damaged_backups_are_one_alert_per_destination_until_none_is_left() -> None:
    """A deleted pack damages every paged backup that names it: one alert, not one each."""
    made = [manifest(h, n=h) for h in range(1, 6)]
    broken = DestinationState(
        url=URL,
        backups=tuple(made),
        drills={m.backup_id: drill(m, 0.5) for m in made},
        damaged={m.backup_id: "objects missing: packs/p1.pack" for m in made},
    )
    (finding,) = evaluate("kotomi", [broken], TH, NOW).findings
    assert finding.kind == BACKUP_DAMAGED and finding.scope == URL
    assert finding.problem.startswith(f"5 backups: {made[0].backup_id}: objects missing")
    assert finding.problem.endswith("; and 2 more")
    assert finding.details["damaged_backups"] == "5"
    state, _ = tick({}, [broken])
    fixed = DestinationState(url=URL, backups=tuple(made), drills=broken.drills)
    state, sent = tick(state, [fixed])
    assert len(sent) == 1 and isinstance(sent[0], Recovery) and state == {}


def test_stale_newest_backup_and_no_backup_at_all() -> None:
    report = evaluate("kotomi", [dest(manifest(40)), dest(url=URL2)], TH, NOW)
    stale = [f for f in report.findings if f.kind == STALE]
    assert [f.scope for f in stale] == [URL, URL2]
    assert "40 h old (limit 36 h)" in stale[0].problem
    assert stale[1].problem == f"no complete backup of kotomi at {URL2}"
    assert "kotomi-backup backup --name kotomi" in stale[0].next_step
    assert evaluate("kotomi", [dest(manifest(35.9))], TH, NOW).findings == ()


def test_size_drop_below_the_ratio_fires_once_per_backup_with_the_tables_that_shrank() -> None:
    before = manifest(25, size=2_000_000, rows=1000, n=1)
    halved = manifest(1, size=900_000, rows=400, n=2)
    same = [dest(halved, before), dest(halved, before, url=URL2)]
    findings = [f for f in evaluate("kotomi", same, TH, NOW).findings if f.kind == SIZE_DROP]
    assert len(findings) == 1, "the same backup at two destinations is one alert"
    assert "45% of the previous backup" in findings[0].problem
    assert findings[0].details["rows comments"] == "1000 -> 400"
    assert not findings[0].resolves
    slight = manifest(1, size=1_100_000, n=3)
    assert evaluate("kotomi", [dest(slight, before)], TH, NOW).findings == ()


def test_drill_failed_and_overdue() -> None:
    old, new = manifest(24 * 12, n=1), manifest(2, n=2)
    failed = drill(new, 1, ok=False)
    passed_long_ago = drill(old, 24 * 10)
    report = evaluate("kotomi", [dest(new, old, drills=[failed, passed_long_ago])], TH, NOW)
    assert kinds(report.findings) == [DRILL_FAILED, DRILL_OVERDUE]
    fail = next(f for f in report.findings if f.kind == DRILL_FAILED)
    assert fail.backup_id == new.backup_id
    assert "integrity_check: row 12 missing from index" in fail.problem
    assert "more" not in fail.problem  # first line only
    overdue = next(f for f in report.findings if f.kind == DRILL_OVERDUE)
    assert "10 days" in overdue.problem


def test_a_new_setup_is_not_overdue_before_its_first_drill_is_due() -> None:
    young = [dest(manifest(2, n=2), manifest(24 * 7, n=1))]
    assert evaluate("kotomi", young, TH, NOW).findings == ()
    old = [dest(manifest(2, n=2), manifest(24 * 9, n=1))]
    assert kinds(evaluate("kotomi", old, TH, NOW).findings) == [DRILL_OVERDUE]


def test_zero_thresholds_disable_checks() -> None:
    off = Thresholds(timedelta(0), timedelta(0), 0.0)
    states = [dest(manifest(500, size=1, n=2), manifest(600, n=1), drills=[])]
    assert evaluate("kotomi", states, off, NOW).findings == ()


def test_unlistable_destination_is_a_finding_and_keeps_its_other_alerts_open() -> None:
    broken = DestinationState(url=URL2, error="PermissionError: denied")
    stale_alert = OpenAlert(
        key=f"stale|{URL2}", kind=STALE, scope=URL2, what="stale backup", problem="p", since="x"
    )
    report = evaluate("kotomi", [dest(manifest(1)), broken], TH, NOW)
    assert kinds(report.findings) == [UNLISTABLE]
    step = reconcile({stale_alert.key: stale_alert}, report, NOW)
    assert [f.kind for f in step.fired] == [UNLISTABLE]
    assert step.recovered == () and stale_alert.key in step.kept  # not looked at: no "recovered"


def deliver_all(log: list[Finding | Recovery]) -> object:
    def deliver(item: Finding | Recovery) -> bool:
        log.append(item)
        return True

    return deliver


def tick(
    state: dict[str, OpenAlert], states: list[DestinationState], now: datetime = NOW
) -> tuple[dict[str, OpenAlert], list[Finding | Recovery]]:
    sent: list[Finding | Recovery] = []
    report = evaluate("kotomi", states, TH, now)
    new = advance(state, reconcile(state, report, now), now, deliver_all(sent))  # type: ignore[arg-type]
    restored, _ = load_state(dump_state(new))  # every tick goes through the JSON cursor
    assert restored == new
    return restored, sent


def test_stale_alerts_once_across_ticks_then_recovers_once() -> None:
    state: dict[str, OpenAlert] = {}
    stale = [dest(manifest(40))]
    state, sent = tick(state, stale)
    assert [type(s).__name__ for s in sent] == ["Finding"]
    for _ in range(2):
        state, sent = tick(state, stale)
        assert sent == []
    fresh = [dest(manifest(0.5, n=2), manifest(40))]
    state, sent = tick(state, fresh)
    assert len(sent) == 1 and isinstance(sent[0], Recovery)
    assert "30 min old" in sent[0].now_fine
    assert state == {}
    assert tick(state, fresh)[1] == []


def test_a_size_drop_closes_silently_when_a_newer_backup_lands() -> None:
    before, halved = manifest(25, n=1), manifest(1, size=500_000, n=2)
    state, sent = tick({}, [dest(halved, before)])
    assert [s.kind for s in sent if isinstance(s, Finding)] == [SIZE_DROP]
    later = manifest(0.1, size=510_000, n=3)
    state, sent = tick(state, [dest(later, halved, before)])
    assert sent == [] and state == {}


def test_a_failed_drill_alerts_once_and_recovers_when_a_drill_of_that_backup_passes() -> None:
    m = manifest(3)
    state, sent = tick({}, [dest(m, drills=[drill(m, 2, ok=False)])])
    assert [s.kind for s in sent if isinstance(s, Finding)] == [DRILL_FAILED]
    state, sent = tick(state, [dest(m, drills=[drill(m, 2, ok=False)])])
    assert sent == []
    state, sent = tick(state, [dest(m, drills=[drill(m, 1, ok=True)])])
    assert len(sent) == 1 and isinstance(sent[0], Recovery)
    assert "passed" in sent[0].now_fine


def test_undelivered_alerts_are_retried_and_undelivered_recoveries_stay_open() -> None:
    stale = [dest(manifest(40))]
    report = evaluate("kotomi", stale, TH, NOW)
    state = advance({}, reconcile({}, report, NOW), NOW, lambda item: False)
    assert state == {}, "nobody was told: the next tick must try again"
    state = advance({}, reconcile({}, report, NOW), NOW, lambda item: True)
    fresh = evaluate("kotomi", [dest(manifest(1, n=2))], TH, NOW)
    kept = advance(state, reconcile(state, fresh, NOW), NOW, lambda item: False)
    assert kept == state


def test_alerts_of_a_removed_destination_are_dropped() -> None:
    state, _ = tick({}, [dest(manifest(40), url=URL2)])
    step = reconcile(state, evaluate("kotomi", [dest(manifest(1))], TH, NOW), NOW)
    assert [a.scope for a in step.dropped] == [URL2] and step.recovered == ()


def test_a_garbage_cursor_reads_as_nothing_open() -> None:
    for text in (
        None,
        "",
        "not json",
        "[]",
        '{"version": 99, "open": {}}',
        '{"version": 1, "open": 3}',
    ):
        assert load_state(text)[0] == {}


@settings(max_examples=60, deadline=None)
@given(
    ages=st.lists(st.floats(min_value=0, max_value=24 * 20), min_size=1, max_size=12),
    size=st.integers(min_value=1, max_value=10_000_000),
)
def test_replaying_the_same_state_never_fires_twice(ages: list[float], size: int) -> None:
    backups = sorted(
        (manifest(a, size=size if i % 2 else size // 3 + 1, n=i) for i, a in enumerate(ages)),
        key=lambda m: m.backup_id,
        reverse=True,
    )
    states = [dest(*backups)]
    state, first = tick({}, states)
    again, second = tick(state, states)
    assert second == [] and again == state
    assert len({f.key for f in first if isinstance(f, Finding)}) == len(first)


def test_inspect_destination_reads_backups_and_drills_and_turns_errors_into_one_line(
    tmp_path: object,
) -> None:
    from pathlib import Path

    from kotomi_backup_dagster.engine.layout import manifest_key, write_drill
    from kotomi_backup_dagster.engine.stores import LocalStore

    root = Path(str(tmp_path))
    store = LocalStore(root / "store")
    m = manifest(2)
    store.put_bytes(manifest_key("kotomi", m.backup_id), m.to_json())
    write_drill(store, "kotomi", drill(m, 1, ok=False))
    state = inspect_destination(store, "kotomi")
    assert state.listed and [b.backup_id for b in state.backups] == [m.backup_id]
    assert state.drills[m.backup_id].ok is False

    loop = root / "loop"
    loop.mkdir()
    (loop / "kotomi").symlink_to(loop / "kotomi")  # a symlink below the root: refused, even as root
    broken = inspect_destination(LocalStore(loop), "kotomi")
    assert not broken.listed
    assert broken.error and "is a symlink" in broken.error
    assert "\n" not in broken.error
