"""The alerts area: one run-failure sensor for the code location, and per database a health
sensor and its `backup_catalog` asset; one notifier resource for all of them.

The health sensors and the catalog read each database's destinations through the backup
area's settings resource (``spec.resource_key``), so this area adds no second copy
of those settings: merge these definitions with the backup area's.
"""

from datetime import timedelta

from dagster import Definitions

from ..backup.definitions import DAILY_AT_2, HOURLY
from ..databases import DatabaseSpec
from ..retention.resources import keep_hourly_from_env
from .catalog import build_catalog_asset
from .monitor import build_health_sensor, cron_interval
from .resources import NOTIFIER_KEY, alert_notifier_from_env
from .run_failure import build_run_failure_sensor


def active_backup_interval() -> timedelta:
    """The gap between backups of the schedule the backup area turns on (hourly when
    hourly tiers are kept, else daily at 02:00)."""
    return cron_interval(HOURLY if keep_hourly_from_env() > 0 else DAILY_AT_2)


def build_alerts_definitions(
    specs: list[DatabaseSpec], *, backup_interval: timedelta | None = None
) -> Definitions:
    """`backup_interval` sets the default stale threshold (1.5 x, at least + 2 h); by default
    it is the gap between runs of the backup schedule that is on (daily: stale after 36 h;
    hourly: after 3 h). KOTOMI_BACKUP_STALE_HOURS overrides either."""
    interval = backup_interval or active_backup_interval()
    sensors = [build_run_failure_sensor(specs)]
    assets = []
    for spec in specs:
        sensors.append(build_health_sensor(spec, spec.resource_key, interval))
        assets.append(build_catalog_asset(spec, spec.resource_key))
    return Definitions(
        assets=assets,
        sensors=sensors,
        resources={NOTIFIER_KEY: alert_notifier_from_env()},
    )
