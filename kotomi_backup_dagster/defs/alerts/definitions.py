"""The alerts area: one run-failure sensor, one health sensor for every database, and the
`backup_catalog` asset of every database; one notifier resource for all of them.

The health sensor and the catalog read the destinations through the backup area's settings
resource, so this area adds no second copy of those settings: merge these definitions with
the backup area's.
"""

from __future__ import annotations

from dagster import Definitions

from ..options import KotomiBackupOptions
from .catalog import build_catalog_asset
from .monitor import build_health_sensor
from .resources import NOTIFIER_KEY
from .run_failure import build_run_failure_sensor


def build_alerts_definitions(options: KotomiBackupOptions) -> Definitions:
    return Definitions(
        assets=[build_catalog_asset(options.databases, options)],
        sensors=[
            build_run_failure_sensor(options.databases),
            build_health_sensor(
                options.databases,
                options.health_thresholds(),
                options.retention_policy,
                keeper=options.keeper,
            ),
        ],
        resources={NOTIFIER_KEY: options.notifier},
    )
