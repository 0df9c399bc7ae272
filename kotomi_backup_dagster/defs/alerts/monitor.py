"""The health sensor (one for every database): stale backup, overdue or failed drill, size drop and
unlistable destination, each alerted once and "recovered" once (engine/health.py finds them,
engine/alert_state.py remembers which were sent).

The sensor's cursor is the JSON state of `engine.alert_state.dump_state`: the open alerts and
when the backup catalog was last observed. Dagster stores it with each tick, so a daemon
restart neither repeats an alert nor loses one.
"""

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ...engine.alert_state import Recovery, advance, dump_state, load_state, reconcile
from ...engine.health import Finding, Thresholds, evaluate, utcnow
from ...engine.keeper.guard import KeeperSettings
from ...engine.manifest import rfc3339
from ...engine.notify import Alert
from ...engine.retention import RetentionPolicy
from ..backup.assets import SETTINGS_KEY
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from .catalog import catalog_observation, catalog_view, read_destinations
from .resources import NOTIFIER_KEY, AlertNotifier

HEALTH_INTERVAL_SECONDS = 300
CATALOG_EVERY = timedelta(hours=1)  # observe at least this often; at once on any change


HEALTH_SENSOR = "kotomi_backup_health"


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


def _database_cursor(cursor: str | None, name: str, single: bool) -> str | None:
    """One database's part of the sensor's cursor; a cursor of the former one-database
    sensor (same name for the default database) is read as that database's."""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("databases"), dict):
        part = data["databases"].get(name)
        return part if isinstance(part, str) else None
    return cursor if single else None


def check_database(
    context: SensorEvaluationContext,
    spec: DatabaseSpec,
    resource: KotomiBackupResource,
    notifier: AlertNotifier,
    thresholds: Thresholds,
    policy: RetentionPolicy,
    cursor: str | None,
    keeper: KeeperSettings | None = None,
) -> tuple[str, list[AssetObservation]]:
    """One database's tick: alerts sent and closed, the catalog observed when due."""
    now = utcnow()
    states = read_destinations(resource, spec, policy, keeper)
    report = evaluate(spec.name, states, thresholds, now)
    open_alerts, saved = load_state(cursor)
    transition = reconcile(open_alerts, report, now)

    def deliver(item: Finding | Recovery) -> bool:
        delivery = notifier.send(alert_for(spec.name, item), context.log)
        return delivery.delivered or delivery.no_channel

    state = advance(open_alerts, transition, now, deliver)
    for dropped in transition.dropped:
        context.log.info(f"closed without a message: {dropped.what} ({dropped.key})")

    view = catalog_view(spec.name, states, now, policy)
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
    return dump_state(state, catalog=last), events


def build_health_sensor(
    specs: Sequence[DatabaseSpec],
    thresholds: Thresholds,
    retention_policy: Callable[[], RetentionPolicy],
    settings_key: str = SETTINGS_KEY,
    keeper: KeeperSettings | None = None,
) -> SensorDefinition:
    """`retention_policy` is asked at each tick (its variables are read then) for the
    catalog's tiers."""
    names = ", ".join(s.name for s in specs[:3]) + (" ..." if len(specs) > 3 else "")

    @sensor(
        name=HEALTH_SENSOR,
        minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={settings_key, NOTIFIER_KEY},
        description=(
            f"Every {HEALTH_INTERVAL_SECONDS // 60} min, for every database ({names}): is the "
            "newest backup fresh at every destination, has a drill passed lately, did the "
            "database shrink, does every destination list? Alerts once, says when it "
            "recovers, and observes each <name>/backup_catalog."
        ),
    )
    def backup_health(context: SensorEvaluationContext) -> SensorResult:
        resource: KotomiBackupResource = getattr(context.resources, settings_key)
        notifier: AlertNotifier = getattr(context.resources, NOTIFIER_KEY)
        cursors: dict[str, str] = {}
        events: list[AssetObservation] = []
        policy = retention_policy()
        for spec in specs:
            part = _database_cursor(context.cursor, spec.name, single=len(specs) == 1)
            cursors[spec.name], observed = check_database(
                context, spec, resource, notifier, thresholds, policy, part, keeper
            )
            events += observed
        cursor = json.dumps({"databases": cursors}, sort_keys=True, separators=(",", ":"))
        return SensorResult(asset_events=events, cursor=cursor)

    return backup_health


def _parse(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
