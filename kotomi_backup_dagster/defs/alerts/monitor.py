"""The health sensor of one database: stale backup, overdue or failed drill, size drop and
unlistable destination, each alerted once and "recovered" once (see engine/health.py).

The sensor's cursor is the JSON state of `engine.health.dump_state`: the open alerts and
when the backup catalog was last observed. Dagster stores it with each tick, so a daemon
restart neither repeats an alert nor loses one.
"""

import itertools
from datetime import UTC, datetime, timedelta

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._utils.schedules import cron_string_iterator

from ...engine.health import (
    Finding,
    Recovery,
    Thresholds,
    advance,
    dump_state,
    evaluate,
    load_state,
    reconcile,
    utcnow,
)
from ...engine.manifest import rfc3339
from ...engine.notify import Alert
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from .catalog import catalog_observation, catalog_view, read_destinations
from .resources import NOTIFIER_KEY, AlertNotifier

HEALTH_INTERVAL_SECONDS = 300
CATALOG_EVERY = timedelta(hours=1)  # observe at least this often; at once on any change


def health_sensor_name(spec: DatabaseSpec) -> str:
    return f"{spec.key}_backup_health"


def cron_interval(cron: str, timezone: str = "UTC", samples: int = 8) -> timedelta:
    """The longest gap between consecutive ticks of a cron schedule (daily: 24 h)."""
    ticks = cron_string_iterator(datetime(2026, 1, 5, tzinfo=UTC).timestamp(), cron, timezone)
    times = [next(ticks) for _ in range(samples + 1)]
    return max(b - a for a, b in itertools.pairwise(times))


def alert_for(name: str, item: Finding | Recovery) -> Alert:
    if isinstance(item, Recovery):
        alert = item.alert
        return Alert(
            database=name,
            what=alert.what,
            error=item.now_fine,
            next_step="Nothing to do. It was: " + alert.problem,
            kind=alert.kind,
            status="recovered",
            destination=alert.destination,
            details={"open_since": alert.since},
        )
    return Alert(
        database=name,
        what=item.what,
        error=item.problem,
        next_step=item.next_step,
        kind=item.kind,
        destination=item.destination,
        details=dict(item.details),
    )


def build_health_sensor(
    spec: DatabaseSpec, settings_key: str, backup_interval: timedelta
) -> SensorDefinition:
    name = health_sensor_name(spec)

    @sensor(
        name=name,
        minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={settings_key, NOTIFIER_KEY},
        description=(
            f"Every {HEALTH_INTERVAL_SECONDS // 60} min: is the newest backup of {spec.name} "
            "fresh at every destination, has a drill passed lately, did the database shrink, "
            "does every destination list? Alerts once, says when it recovers, and observes "
            f"{spec.name}/backup_catalog."
        ),
    )
    def backup_health(context: SensorEvaluationContext) -> SensorResult:
        resource: KotomiBackupResource = getattr(context.resources, settings_key)
        notifier: AlertNotifier = getattr(context.resources, NOTIFIER_KEY)
        now = utcnow()
        thresholds = Thresholds.from_env(backup_interval=backup_interval)
        states = read_destinations(resource, spec.name)
        report = evaluate(spec.name, states, thresholds, now)
        open_alerts, saved = load_state(context.cursor)
        transition = reconcile(open_alerts, report, now)

        def deliver(item: Finding | Recovery) -> bool:
            delivery = notifier.send(alert_for(spec.name, item), context.log)
            return delivery.delivered or delivery.no_channel

        state = advance(open_alerts, transition, now, deliver)
        for dropped in transition.dropped:
            context.log.info(f"closed without a message: {dropped.what} ({dropped.key})")

        view = catalog_view(spec.name, states, now)
        previous = saved.get("catalog")
        last = previous if isinstance(previous, dict) else {}
        events = []
        observed_at = last.get("observed_at")
        due = not isinstance(observed_at, str) or now - _parse(observed_at) >= CATALOG_EVERY
        if due or last.get("version") != view.version:
            events.append(catalog_observation(spec, view))
            last = {"version": view.version, "observed_at": rfc3339(now)}
        context.log.info(
            f"{spec.name}: {len(report.findings)} finding(s), {len(state)} open alert(s); "
            f"{thresholds.describe()}"
        )
        return SensorResult(asset_events=events, cursor=dump_state(state, catalog=last))

    return backup_health


def _parse(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
