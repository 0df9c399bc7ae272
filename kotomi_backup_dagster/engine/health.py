"""Backup health: is the newest backup fresh, is there a recent passing drill, did the
database suddenly shrink, can every destination be listed, are every backup's objects still
there as its manifest says? Which of those alerts were already sent, and which recovered, is
`alert_state.py`.

Pure decisions over plain data (manifests, drill records, a clock and thresholds), so the
CLI can use them as well as the Dagster sensor. The only function that touches a store is
`inspect_destination`, which reads one destination into a `DestinationState`.

The flow, on every check::

    states = [inspect_destination(store, name) for store in stores]
    report = evaluate(name, states, Thresholds.from_env(), now)
    transition = reconcile(open_alerts, report, now)        # alert_state.py
    open_alerts = advance(open_alerts, transition, now, deliver)

Thresholds (`Thresholds.from_env`: KOTOMI_BACKUP_STALE_HOURS, _DRILL_OVERDUE_DAYS and
_SIZE_DROP_RATIO in the settings table, config.py; 0 disables a check). The stale limit's
default follows the backup interval: 1.5 x it, at least it + 2 h (36 h for a daily backup).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import config
from .errors import BackupError, first_line, without_repeated_prefix
from .keeper.guard import KeeperSettings
from .layout import DrillRecord
from .manifest import Manifest
from .notify import destination_advice
from .readable import readable_duration, readable_size
from .retention import RetentionPolicy
from .stores import BackupStore, safe_url
from .survey import survey_store

STALE = "stale"
DRILL_OVERDUE = "drill_overdue"
DRILL_FAILED = "drill_failed"
SIZE_DROP = "size_drop"
UNLISTABLE = "unlistable"
BACKUP_DAMAGED = "backup_damaged"  # its objects are missing or differ from its manifest
BACKUP_TAMPERED = "backup_tampered"  # rewritten, hidden, unlocked early, dated in the future
BACKUP_BURST = "backup_burst"  # more backups in an hour than any schedule makes: garbage?
KINDS = (
    STALE,
    DRILL_OVERDUE,
    DRILL_FAILED,
    SIZE_DROP,
    UNLISTABLE,
    BACKUP_DAMAGED,
    BACKUP_TAMPERED,
    BACKUP_BURST,
)

DATABASE_SCOPE = "*"  # a finding about the database as a whole, not one destination
SHOWN_BACKUPS = 3  # damaged backups named in one alert; the rest are counted


def default_burst_limit(interval: timedelta) -> int:
    """Backups per hour beyond which a burst is reported: three times what the cadence
    makes, and never fewer than 12 (re-runs and manual backups are normal)."""
    per_hour = math.ceil(3600 / max(interval.total_seconds(), 1))
    return max(12, 3 * per_hour)


def default_stale_after(interval: timedelta) -> timedelta:
    """1.5 x the backup interval, and at least the interval + 2 h (daily: 36 h), rounded up
    to a whole hour: the 15-minute cadence's 2 h 15 min is 3 h, a figure Dagster's UI shows
    as it is (it rounds a freshness window to whole hours: "2 hours")."""
    limit = max(interval * 1.5, interval + timedelta(hours=2))
    return timedelta(hours=math.ceil(limit / timedelta(hours=1)))


DAILY_STALE_AFTER = default_stale_after(timedelta(days=1))  # 36 h


@dataclass(frozen=True)
class Thresholds:
    """When a finding is raised. A zero duration or ratio disables that check."""

    stale_after: timedelta = DAILY_STALE_AFTER
    drill_overdue_after: timedelta = timedelta(days=config.DRILL_OVERDUE_DAYS.default)
    size_drop_ratio: float = config.SIZE_DROP_RATIO.default
    burst_per_hour: int = 12  # backups reaching a store within an hour

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
            burst_per_hour=default_burst_limit(backup_interval),
        )

    @classmethod
    def defaults(cls, backup_interval: timedelta) -> Thresholds:
        """The thresholds no variable changes, for this backup interval."""
        return cls(
            stale_after=default_stale_after(backup_interval),
            burst_per_hour=default_burst_limit(backup_interval),
        )

    def describe(self) -> str:
        return (
            f"stale after {readable_duration(self.stale_after)}, drill overdue after "
            f"{readable_duration(self.drill_overdue_after)}, "
            f"size drop below {self.size_drop_ratio:.0%}"
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
    tampered: Mapping[str, str] = field(default_factory=dict)  # backup_id -> what was done
    locked_until: Mapping[str, datetime | None] = field(default_factory=dict)  # by backup_id
    tiers: Mapping[str, list[str]] = field(default_factory=dict)  # what prune keeps, and why
    lock_mode: str | None = None  # the store locks objects (compliance, governance)
    hidden: Mapping[str, str] = field(default_factory=dict)  # id -> its hidden manifest's version
    stored_at: Mapping[str, datetime] = field(default_factory=dict)  # by the store's clock

    @property
    def listed(self) -> bool:
        return self.error is None

    @property
    def newest(self) -> Manifest | None:
        return self.backups[0] if self.backups else None


def inspect_destination(
    store: BackupStore,
    name: str,
    policy: RetentionPolicy | None = None,
    keeper: KeeperSettings | None = None,
) -> DestinationState:
    """List one destination, the newest drill of every backup, whether its objects are
    still there and untouched, and (with `policy`) the tiers each fills and its lock
    (survey.py); never raises on a store error (the error becomes `DestinationState.error`)."""
    url = safe_url(store.url)
    try:
        survey = survey_store(store, name, policy, keeper)
    except Exception as exc:
        return DestinationState(url=url, error=error_line(exc))
    listing = survey.listing
    ids = [m.backup_id for m in listing.backups]
    return DestinationState(
        url=url,
        backups=tuple(listing.backups),
        drills=survey.drills,
        incomplete=tuple(listing.incomplete),
        unreadable=tuple(listing.unreadable),
        damaged=survey.damaged,
        tampered={i: t for i in ids if (t := survey.tampered(i))},
        locked_until={i: survey.locked_until(i) for i in ids},
        tiers={i: survey.tiers(i) for i in ids} if survey.decisions else {},
        lock_mode=survey.guard.mode,
        hidden=dict(survey.hidden),
        stored_at={
            i: p.stored_at for i, p in survey.guard.protections.items() if p.stored_at is not None
        },
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
        findings += _tampered(name, dest)
        findings += _burst(name, dest, thresholds, now)
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


def _tampered(name: str, dest: DestinationState) -> list[Finding]:
    """One alert per backup whose objects were rewritten, hidden or unlocked early, or that
    claims a time the store contradicts; open until it is no longer so."""
    hidden = [
        Finding(
            key=_key(BACKUP_TAMPERED, dest.url, backup_id),
            kind=BACKUP_TAMPERED,
            scope=dest.url,
            what="backup hidden",
            problem=(
                f"backup {backup_id} at {dest.url}: its manifest is hidden behind a delete "
                "marker, so listings miss it"
            ),
            next_step=(
                "Someone with delete rights on the bucket hid it: check the access logs and "
                "rotate those credentials. Its objects are still there (and locked): "
                f"`kotomi-backup restore {backup_id} --from {dest.url} --name {name} --db ...` "
                "reads the recorded versions; to show it again, delete the delete marker."
            ),
            backup_id=backup_id,
        )
        for backup_id in sorted(dest.hidden)
    ]
    return hidden + [
        Finding(
            key=_key(BACKUP_TAMPERED, dest.url, backup_id),
            kind=BACKUP_TAMPERED,
            scope=dest.url,
            what="backup tampered with",
            problem=f"backup {backup_id} at {dest.url}: {dest.tampered[backup_id]}",
            next_step=(
                "Someone with write access to the bucket changed it: check its access logs "
                "and which credentials were used, and rotate the writer's. Restores read the "
                "versions the backup recorded; it fills no retention slot and is kept. "
                f"`kotomi-backup list --to {dest.url} --name {name}` marks it TAMPERED; "
                f"`kotomi-backup drill {backup_id} --from {dest.url} --name {name}` proves "
                "what it restores."
            ),
            backup_id=backup_id,
        )
        for backup_id in (m.backup_id for m in dest.backups)
        if backup_id in dest.tampered
    ]


def _burst(name: str, dest: DestinationState, th: Thresholds, now: datetime) -> list[Finding]:
    """More backups reached the store within the last hour than any schedule makes: a stolen
    writer credential uploading garbage to push the real backups out of their tiers looks
    like this. The keeper removes nothing younger than a day (prune.SETTLE), so there is
    time to look."""
    recent = [i for i, t in dest.stored_at.items() if now - timedelta(hours=1) <= t <= now]
    if not th.burst_per_hour or len(recent) <= th.burst_per_hour:
        return []
    return [
        Finding(
            key=_key(BACKUP_BURST, dest.url),
            kind=BACKUP_BURST,
            scope=dest.url,
            what="burst of backups",
            problem=(
                f"{len(recent)} backups reached {dest.url} within the last hour "
                f"(limit {th.burst_per_hour}); newest {max(recent)}"
            ),
            next_step=(
                "If nobody ran them, the writer's credentials are being used by someone else: "
                "rotate them, then check the newest backups "
                f"(`kotomi-backup list --to {dest.url} --name {name}`). Prune removes no "
                "backup younger than a day, and locked backups stay until their tiers end."
            ),
            details={"backups_last_hour": str(len(recent))},
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
                f"newest backup {newest.backup_id} is {readable_duration(age)} old "
                f"(limit {readable_duration(th.stale_after)})"
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
                    f"backup {newest.backup_id} holds {readable_size(newest.db_size)}, "
                    f"{ratio:.0%} of the previous backup {previous.backup_id} "
                    f"({readable_size(previous.db_size)}; "
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
    limit = readable_duration(th.drill_overdue_after)
    if newest_pass is not None:
        since = newest_pass.time
        problem = (
            f"no passing restore drill at {dest.url} for {readable_duration(now - since)} "
            f"(last: {newest_pass.backup_id} at {newest_pass.drilled_at}; limit {limit})"
        )
    else:
        since = min(m.created for m in dest.backups)
        problem = (
            f"no restore drill has passed at {dest.url}; its oldest backup is "
            f"{readable_duration(now - since)} old (limit {limit})"
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


def newest_created(destinations: Collection[DestinationState]) -> datetime | None:
    """When the newest complete backup anywhere was made."""
    times = [d.newest.created for d in destinations if d.newest is not None]
    return max(times) if times else None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
