"""Backup health: is the newest backup fresh, is there a recent passing drill, did the
database suddenly shrink, can every destination be listed, are every backup's objects still
there as its manifest says? And which alerts that raises, once, and which it clears.

Pure decisions over plain data (manifests, drill records, a clock and thresholds), so the
CLI can use them as well as the Dagster sensor. The only function that touches a store is
`inspect_destination`, which reads one destination into a `DestinationState`.

The flow, on every check::

    states = [inspect_destination(store, name) for store in stores]
    report = evaluate(name, states, Thresholds.from_env(), now)
    transition = reconcile(open_alerts, report, now)        # what fired, what recovered
    open_alerts = advance(open_alerts, transition, now, deliver)   # deliver(...) -> bool

`open_alerts` is what a sensor cursor (or a state file) keeps between checks: an alert that
is open is not sent again, and an alert whose condition clears sends one "recovered" message.
An alert that no channel delivered stays unsent (or open, for a recovery), so the next check
tries again: restarts neither repeat nor lose alerts.

Thresholds (`Thresholds.from_env`: KOTOMI_BACKUP_STALE_HOURS, _DRILL_OVERDUE_DAYS and
_SIZE_DROP_RATIO in the settings table, config.py; 0 disables a check). The stale limit's
default follows the backup interval: 1.5 x it, at least it + 2 h (36 h for a daily backup).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from . import config
from .errors import BackupError, first_line, without_repeated_prefix
from .layout import DrillRecord, latest_drill, list_backups
from .manifest import Manifest, rfc3339
from .notify import destination_advice
from .objects import damaged_backups
from .stores import BackupStore, safe_url

STALE = "stale"
DRILL_OVERDUE = "drill_overdue"
DRILL_FAILED = "drill_failed"
SIZE_DROP = "size_drop"
UNLISTABLE = "unlistable"
BACKUP_DAMAGED = "backup_damaged"  # its objects are missing or differ from its manifest
KINDS = (STALE, DRILL_OVERDUE, DRILL_FAILED, SIZE_DROP, UNLISTABLE, BACKUP_DAMAGED)

DATABASE_SCOPE = "*"  # a finding about the database as a whole, not one destination
SHOWN_BACKUPS = 3  # damaged backups named in one alert; the rest are counted
STATE_VERSION = 1


def default_stale_after(interval: timedelta) -> timedelta:
    """1.5 x the backup interval, and at least the interval + 2 h (daily: 36 h)."""
    return max(interval * 1.5, interval + timedelta(hours=2))


DAILY_STALE_AFTER = default_stale_after(timedelta(days=1))  # 36 h


@dataclass(frozen=True)
class Thresholds:
    """When a finding is raised. A zero duration or ratio disables that check."""

    stale_after: timedelta = DAILY_STALE_AFTER
    drill_overdue_after: timedelta = timedelta(days=config.DRILL_OVERDUE_DAYS.default)
    size_drop_ratio: float = config.SIZE_DROP_RATIO.default

    def __post_init__(self) -> None:
        if self.stale_after < timedelta(0) or self.drill_overdue_after < timedelta(0):
            raise ValueError("health thresholds must not be negative")
        if not 0.0 <= self.size_drop_ratio <= 1.0:
            raise ValueError(f"size_drop_ratio must be within 0..1, got {self.size_drop_ratio}")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        backup_interval: timedelta = timedelta(days=1),
    ) -> Thresholds:
        hours = config.STALE_HOURS.read(environ)
        return cls(
            stale_after=default_stale_after(backup_interval)
            if hours is None
            else timedelta(hours=hours),
            drill_overdue_after=timedelta(days=config.DRILL_OVERDUE_DAYS.read(environ)),
            size_drop_ratio=config.SIZE_DROP_RATIO.read(environ),
        )

    @classmethod
    def defaults(cls, backup_interval: timedelta) -> Thresholds:
        """The thresholds no variable changes, for this backup interval."""
        return cls(stale_after=default_stale_after(backup_interval))

    def describe(self) -> str:
        return (
            f"stale after {_duration(self.stale_after)}, drill overdue after "
            f"{_duration(self.drill_overdue_after)}, size drop below {self.size_drop_ratio:.0%}"
        )


@dataclass(frozen=True)
class DestinationState:
    """What one destination holds for one database, or why it could not be listed."""

    url: str  # safe to show (no credentials)
    backups: tuple[Manifest, ...] = ()  # complete backups, newest first
    drills: Mapping[str, DrillRecord] = field(default_factory=dict)  # backup_id -> newest drill
    incomplete: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    error: str | None = None  # one line when listing failed
    damaged: Mapping[str, str] = field(default_factory=dict)  # backup_id -> what is wrong

    @property
    def listed(self) -> bool:
        return self.error is None

    @property
    def newest(self) -> Manifest | None:
        return self.backups[0] if self.backups else None


def inspect_destination(store: BackupStore, name: str) -> DestinationState:
    """List one destination, the newest drill of every backup and whether its objects are
    still there (objects.py); never raises on a store error (the error becomes
    `DestinationState.error`)."""
    url = safe_url(store.url)
    try:
        listing = list_backups(store, name)
        drills: dict[str, DrillRecord] = {}
        for manifest in listing.backups:
            record = latest_drill(store, name, manifest.backup_id)
            if record is not None:
                drills[manifest.backup_id] = record
        damaged = damaged_backups(store, listing.backups)
    except Exception as exc:
        return DestinationState(url=url, error=error_line(exc))
    return DestinationState(
        url=url,
        backups=tuple(listing.backups),
        drills=drills,
        incomplete=tuple(listing.incomplete),
        unreadable=tuple(listing.unreadable),
        damaged=damaged,
    )


def unlistable_destination(url: str, exc: BaseException) -> DestinationState:
    """A destination that could not even be opened (bad URL, missing client library)."""
    return DestinationState(url=safe_url(url), error=error_line(exc))


def error_line(exc: BaseException) -> str:
    """One line: our own errors say what they are already; anything else is named by its
    class (it is unexpected, and the class is the clue)."""
    text = first_line(str(exc))
    if isinstance(exc, BackupError) and text:
        return without_repeated_prefix(text)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Finding:
    """Something wrong now. `key` is stable across checks: the same problem, the same key."""

    key: str
    kind: str
    scope: str  # a destination URL, or DATABASE_SCOPE
    what: str  # short, for the title: "stale backup"
    problem: str  # one line: what is wrong, with numbers
    next_step: str
    backup_id: str | None = None
    resolves: bool = True  # False: a one-off event, no "recovered" message when it clears
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def destination(self) -> str | None:
        return None if self.scope == DATABASE_SCOPE else self.scope


@dataclass(frozen=True)
class HealthReport:
    name: str
    now: datetime
    thresholds: Thresholds
    destinations: tuple[DestinationState, ...]
    findings: tuple[Finding, ...]

    def state(self, url: str) -> DestinationState | None:
        return next((d for d in self.destinations if d.url == url), None)

    @property
    def all_listed(self) -> bool:
        return all(d.listed for d in self.destinations)


def _key(kind: str, scope: str, backup_id: str | None = None) -> str:
    return f"{kind}|{scope}" + (f"|{backup_id}" if backup_id else "")


def evaluate(
    name: str,
    destinations: Sequence[DestinationState],
    thresholds: Thresholds,
    now: datetime,
) -> HealthReport:
    """Every finding for one database over its destinations, at `now`."""
    findings: list[Finding] = []
    for dest in destinations:
        if not dest.listed:
            findings.append(_unlistable(name, dest))
            continue
        findings += _stale(name, dest, thresholds, now)
        findings += _drill_overdue(name, dest, thresholds, now)
        findings += _drill_failures(name, dest)
        findings += _damaged(name, dest)
    findings += _size_drops(name, destinations, thresholds)
    return HealthReport(
        name=name,
        now=now,
        thresholds=thresholds,
        destinations=tuple(destinations),
        findings=tuple(findings),
    )


def _unlistable(name: str, dest: DestinationState) -> Finding:
    error = dest.error or "no reason given"
    check = destination_advice(error) or (
        "Check the destination's credentials, network and permissions"
    )
    return Finding(
        key=_key(UNLISTABLE, dest.url),
        kind=UNLISTABLE,
        scope=dest.url,
        what="destination cannot be listed",
        # The store's messages name the destination already: say it once.
        problem=error if dest.url in error else f"listing {dest.url} failed: {error}",
        next_step=(
            f"{check}; `kotomi-backup list --to {dest.url} --name {name}` shows the error. "
            "Until it lists, its backups are neither checked nor pruned."
        ),
    )


def _damaged(name: str, dest: DestinationState) -> list[Finding]:
    """Backups whose manifest is there but whose objects are missing or changed: one alert
    per destination (a deleted pack damages every backup that names it), open until none is."""
    damaged = [m.backup_id for m in dest.backups if m.backup_id in dest.damaged]
    if not damaged:
        return []
    shown = "; ".join(f"{i}: {dest.damaged[i]}" for i in damaged[:SHOWN_BACKUPS])
    more = len(damaged) - SHOWN_BACKUPS
    first = damaged[0]
    return [
        Finding(
            key=_key(BACKUP_DAMAGED, dest.url),
            kind=BACKUP_DAMAGED,
            scope=dest.url,
            what="backup objects missing or changed",
            problem=(f"backup {shown}" if len(damaged) == 1 else f"{len(damaged)} backups: {shown}")
            + (f"; and {more} more" if more > 0 else ""),
            next_step=(
                "Do not count on them: they fill no retention slot and prune keeps them for "
                "inspection. Find out what removed or rewrote their objects (lifecycle rules, "
                "bucket versioning, access logs), take a fresh backup "
                f"(`kotomi-backup backup --name {name} --to {dest.url}`), then delete their "
                f"folders by hand; `kotomi-backup list --to {dest.url} --name {name}` marks "
                "each one DAMAGED."
            ),
            details={"damaged_backups": str(len(damaged)), "newest_damaged": first},
        )
    ]


def _stale(name: str, dest: DestinationState, th: Thresholds, now: datetime) -> list[Finding]:
    if not th.stale_after:
        return []
    newest = dest.newest
    take_one = f"take one now: `kotomi-backup backup --name {name} --to {dest.url}`"
    why = (
        "Check why backups stopped: the backup job's latest runs in Dagster, that the "
        "daemon and the backup schedule are running"
    )
    if newest is None:
        return [
            Finding(
                key=_key(STALE, dest.url),
                kind=STALE,
                scope=dest.url,
                what="no backup",
                problem=f"no complete backup of {name} at {dest.url}",
                next_step=f"{why}; {take_one}.",
            )
        ]
    age = now - newest.created
    if age <= th.stale_after:
        return []
    return [
        Finding(
            key=_key(STALE, dest.url),
            kind=STALE,
            scope=dest.url,
            what="stale backup",
            problem=(
                f"newest backup {newest.backup_id} is {_duration(age)} old "
                f"(limit {_duration(th.stale_after)})"
            ),
            next_step=f"{why}; {take_one}.",
            details={"newest_backup": newest.backup_id, "created_at": newest.created_at},
        )
    ]


def _drill_failures(name: str, dest: DestinationState) -> list[Finding]:
    findings: list[Finding] = []
    for manifest in dest.backups:
        record = dest.drills.get(manifest.backup_id)
        if record is None or record.ok:
            continue
        problem = first_line(record.problems[0]) if record.problems else "no problem recorded"
        findings.append(
            Finding(
                key=_key(DRILL_FAILED, dest.url, manifest.backup_id),
                kind=DRILL_FAILED,
                scope=dest.url,
                what="restore drill failed",
                problem=f"drill of {manifest.backup_id} at {record.drilled_at} failed: {problem}",
                next_step=(
                    f"Do not count on backup {manifest.backup_id}: "
                    f"`kotomi-backup drill {manifest.backup_id} --from {dest.url} --name {name}` "
                    "shows every problem; take a fresh backup and drill it."
                ),
                backup_id=manifest.backup_id,
                details={"problems": str(len(record.problems))},
            )
        )
    return findings


def _size_drops(
    name: str, destinations: Sequence[DestinationState], th: Thresholds
) -> list[Finding]:
    if not th.size_drop_ratio:
        return []
    seen: set[str] = set()
    findings: list[Finding] = []
    for dest in destinations:
        if len(dest.backups) < 2:
            continue
        newest, previous = dest.backups[0], dest.backups[1]
        if newest.backup_id in seen or previous.db_size <= 0:
            continue
        ratio = newest.db_size / previous.db_size
        if ratio >= th.size_drop_ratio:
            continue
        seen.add(newest.backup_id)
        shrunk = sorted(
            (
                (table, previous.tables[table], newest.tables.get(table, 0))
                for table in previous.tables
                if newest.tables.get(table, 0) < previous.tables[table]
            ),
            key=lambda row: row[2] - row[1],
        )
        details = {f"rows {t}": f"{before} -> {after}" for t, before, after in shrunk[:5]}
        findings.append(
            Finding(
                key=_key(SIZE_DROP, DATABASE_SCOPE, newest.backup_id),
                kind=SIZE_DROP,
                scope=DATABASE_SCOPE,
                what="backup much smaller than the previous one",
                problem=(
                    f"backup {newest.backup_id} holds {_size(newest.db_size)}, {ratio:.0%} of "
                    f"the previous backup {previous.backup_id} ({_size(previous.db_size)}; "
                    f"limit {th.size_drop_ratio:.0%})"
                ),
                next_step=(
                    "Check the live database for lost data (row counts below) before the "
                    f"older backups are pruned; backup {previous.backup_id} still holds it "
                    f"(`kotomi-backup restore {previous.backup_id} --db /tmp/check.db "
                    f"--from {dest.url} --name {name}`). If the data was deleted on purpose, "
                    "nothing to do."
                ),
                backup_id=newest.backup_id,
                resolves=False,
                details={"destination": dest.url, **details},
            )
        )
    return findings


def _drill_overdue(
    name: str, dest: DestinationState, th: Thresholds, now: datetime
) -> list[Finding]:
    """No passing drill of a backup at this destination within the limit (a destination
    never drilled counts from its oldest backup, so a new setup has time for its first)."""
    if not th.drill_overdue_after or not dest.backups:
        return []  # nothing to drill: the stale check speaks
    newest_pass = max((r for r in dest.drills.values() if r.ok), key=lambda r: r.time, default=None)
    limit = _duration(th.drill_overdue_after)
    if newest_pass is not None:
        since = newest_pass.time
        problem = (
            f"no passing restore drill at {dest.url} for {_duration(now - since)} "
            f"(last: {newest_pass.backup_id} at {newest_pass.drilled_at}; limit {limit})"
        )
    else:
        since = min(m.created for m in dest.backups)
        problem = (
            f"no restore drill has passed at {dest.url}; its oldest backup is "
            f"{_duration(now - since)} old (limit {limit})"
        )
    if now - since <= th.drill_overdue_after:
        return []
    return [
        Finding(
            key=_key(DRILL_OVERDUE, dest.url),
            kind=DRILL_OVERDUE,
            scope=dest.url,
            what="restore drill overdue",
            problem=problem,
            next_step=(
                f"Run a drill now: `kotomi-backup drill latest --from {dest.url} --name {name}`; "
                "then check that the weekly drill schedule is running and passing."
            ),
        )
    ]


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
        return f"newest backup {newest.backup_id} is {_duration(now - newest.created)} old"
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


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    hours = seconds / 3600
    if abs(seconds) < 60:
        return f"{seconds:.0f} s"
    if abs(hours) < 1:
        return f"{seconds / 60:.0f} min"
    if abs(hours) < 72:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def newest_created(destinations: Collection[DestinationState]) -> datetime | None:
    """When the newest complete backup anywhere was made."""
    times = [d.newest.created for d in destinations if d.newest is not None]
    return max(times) if times else None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
