"""Which health alerts are open, which to send and which recovered, kept between checks.

`health.evaluate` says what is wrong now; this module compares it with what was already
sent. The state is plain JSON (`dump_state`/`load_state`) that a sensor cursor or a state
file keeps: an alert that is open is not sent again, and an alert whose condition clears
sends one "recovered" message. An alert that no channel delivered stays unsent (or open,
for a recovery), so the next check tries again: restarts neither repeat nor lose alerts.

    transition = reconcile(open_alerts, report, now)        # what fired, what recovered
    open_alerts = advance(open_alerts, transition, now, deliver)   # deliver(...) -> bool
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .health import (
    BACKUP_DAMAGED,
    DATABASE_SCOPE,
    DRILL_FAILED,
    DRILL_OVERDUE,
    STALE,
    UNLISTABLE,
    Finding,
    HealthReport,
)
from .manifest import rfc3339
from .readable import readable_duration

STATE_VERSION = 1


@dataclass(frozen=True)
class OpenAlert:
    """An alert that was delivered and whose condition has not cleared yet."""

    key: str
    kind: str
    scope: str
    what: str
    problem: str
    since: str  # RFC 3339: when it was first delivered
    backup_id: str | None = None
    resolves: bool = True

    @property
    def destination(self) -> str | None:
        return None if self.scope == DATABASE_SCOPE else self.scope

    @classmethod
    def opened(cls, finding: Finding, now: datetime) -> OpenAlert:
        return cls(
            key=finding.key,
            kind=finding.kind,
            scope=finding.scope,
            what=finding.what,
            problem=finding.problem,
            since=rfc3339(now),
            backup_id=finding.backup_id,
            resolves=finding.resolves,
        )


@dataclass(frozen=True)
class Recovery:
    """An open alert whose condition cleared: one "recovered" message."""

    alert: OpenAlert
    now_fine: str  # one line: what is fine again


@dataclass(frozen=True)
class Transition:
    fired: tuple[Finding, ...] = ()  # new problems: send an alert each
    recovered: tuple[Recovery, ...] = ()  # cleared problems: send "recovered" each
    dropped: tuple[OpenAlert, ...] = ()  # cleared silently (one-off events, pruned backups)
    kept: Mapping[str, OpenAlert] = field(default_factory=dict)  # still open, not re-sent


def reconcile(
    open_alerts: Mapping[str, OpenAlert], report: HealthReport, now: datetime
) -> Transition:
    """Compare what is open with what is wrong now.

    An open alert about something this check could not look at (its destination did not
    list, or any destination did not list for a database-wide check) stays open unchanged.
    """
    findings = {f.key: f for f in report.findings}
    listed = {d.url for d in report.destinations if d.listed}
    configured = {d.url for d in report.destinations}
    fired = tuple(f for key, f in findings.items() if key not in open_alerts)
    recovered: list[Recovery] = []
    dropped: list[OpenAlert] = []
    kept: dict[str, OpenAlert] = {}
    for key, alert in open_alerts.items():
        if key in findings:
            kept[key] = alert
            continue
        if alert.scope != DATABASE_SCOPE and alert.scope not in configured:
            dropped.append(alert)  # the destination is no longer configured
            continue
        evaluated = (
            alert.scope in configured
            if alert.kind == UNLISTABLE
            else (report.all_listed if alert.scope == DATABASE_SCOPE else alert.scope in listed)
        )
        if not evaluated:
            kept[key] = alert
            continue
        if not alert.resolves or (
            alert.backup_id is not None and not _backup_present(report, alert)
        ):
            dropped.append(alert)
            continue
        recovered.append(Recovery(alert=alert, now_fine=_now_fine(alert, report, now)))
    return Transition(fired=fired, recovered=tuple(recovered), dropped=tuple(dropped), kept=kept)


def _backup_present(report: HealthReport, alert: OpenAlert) -> bool:
    scopes = (
        report.destinations
        if alert.scope == DATABASE_SCOPE
        else [d for d in report.destinations if d.url == alert.scope]
    )
    return any(m.backup_id == alert.backup_id for d in scopes for m in d.backups)


def _now_fine(alert: OpenAlert, report: HealthReport, now: datetime) -> str:
    dest = report.state(alert.scope)
    if alert.kind == STALE and dest is not None and dest.newest is not None:
        newest = dest.newest
        return f"newest backup {newest.backup_id} is {readable_duration(now - newest.created)} old"
    if alert.kind == UNLISTABLE and dest is not None:
        return f"{dest.url} lists again ({len(dest.backups)} backups)"
    if alert.kind == BACKUP_DAMAGED and dest is not None:
        return f"every backup at {dest.url} has its objects as its manifest says"
    if alert.kind == DRILL_FAILED and dest is not None and alert.backup_id:
        record = dest.drills.get(alert.backup_id)
        if record is not None:
            return f"the drill of {alert.backup_id} at {record.drilled_at} passed"
    if alert.kind == DRILL_OVERDUE and dest is not None:
        drill = max((r for r in dest.drills.values() if r.ok), key=lambda r: r.time, default=None)
        if drill is not None:
            return f"restore drill of {drill.backup_id} passed at {drill.drilled_at}"
    return f"{alert.what}: no longer found"


Deliver = Callable[[Finding | Recovery], bool]


def advance(
    open_alerts: Mapping[str, OpenAlert],
    transition: Transition,
    now: datetime,
    deliver: Deliver,
) -> dict[str, OpenAlert]:
    """Send what the transition says and return the alerts open afterwards.

    `deliver` returns True when the message reached someone (or there is no channel to reach).
    A firing alert that was not delivered is not recorded, so the next check sends it again;
    a recovery that was not delivered leaves the alert open, so the next check retries it.
    """
    state = dict(transition.kept)
    for finding in transition.fired:
        if deliver(finding):
            state[finding.key] = OpenAlert.opened(finding, now)
    for recovery in transition.recovered:
        if not deliver(recovery):
            state[recovery.alert.key] = recovery.alert
    return state


def dump_state(open_alerts: Mapping[str, OpenAlert], **extra: object) -> str:
    """The open alerts (and any extra JSON values) as a compact JSON cursor."""
    data: dict[str, object] = {
        "version": STATE_VERSION,
        "open": {key: asdict(alert) for key, alert in sorted(open_alerts.items())},
    }
    data.update(extra)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def load_state(text: str | None) -> tuple[dict[str, OpenAlert], dict[str, object]]:
    """(open alerts, the whole JSON object) from `dump_state` output; garbage or an
    unknown version reads as nothing open, so a problem is re-sent rather than lost."""
    if not text:
        return {}, {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return {}, {}
        alerts = {
            key: OpenAlert(
                **{k: v for k, v in value.items() if k in OpenAlert.__dataclass_fields__}
            )
            for key, value in data.get("open", {}).items()
        }
    except (ValueError, TypeError, AttributeError):
        return {}, {}
    return alerts, data
