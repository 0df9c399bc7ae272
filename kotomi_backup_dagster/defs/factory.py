"""`build_kotomi_backup_defs`: the whole code location for some databases, from Python.

The environment path (definitions.py) and the `KotomiBackupComponent` (defs.yaml) both end
here, so every way of configuring builds the same assets, jobs, schedules and sensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import Definitions, in_process_executor

from ..engine import config
from ..engine.health import Thresholds
from .alerts.definitions import build_alerts_definitions
from .alerts.resources import AlertNotifier
from .backup.assets import SETTINGS_KEY
from .backup.definitions import build_backup_definitions
from .backup.resources import KotomiBackupResource
from .databases import DatabaseSpec
from .envvars import resolved
from .history import build_history_sensor
from .options import DEFAULT_OWNERS, Cadence, KotomiBackupOptions, options_from_env
from .restore.definitions import build_restore_definitions
from .retention.definitions import build_retention_definitions
from .retention.resources import RetentionPolicyResource


def build_definitions(options: KotomiBackupOptions) -> Definitions:
    """Every area of this code location's role for every database, checked first (a bad
    value fails the load). A writer backs up (and restores into its own database); a keeper
    prunes, locks, drills and tests; both watch health (docs/immutability.md)."""
    options.check()
    areas = [
        *([build_backup_definitions(options)] if options.writes else []),
        *([build_retention_definitions(options)] if options.keeps else []),
        build_restore_definitions(options),
        build_alerts_definitions(options),
        # The destinations' settings, which the backup area brings where it is loaded.
        *([] if options.writes else [Definitions(resources={SETTINGS_KEY: options.backup})]),
    ]
    jobs = [j.name for area in areas for j in area.jobs or []]
    databases = {spec.name for spec in options.databases}
    return Definitions.merge(
        *areas,
        Definitions(sensors=[build_history_sensor(jobs, databases, options.run_history_days)]),
        # Stages are sequential: ~5 s a run in process instead of ~12 s with a process per
        # step, for the jobs and for the UI's "Materialize" runs alike.
        Definitions(executor=in_process_executor),
    )


def definitions_from_env() -> Definitions:
    """The code location configured by the KOTOMI_* environment variables."""
    return build_definitions(options_from_env())


def build_kotomi_backup_defs(
    databases: Mapping[str, str | None] | Sequence[DatabaseSpec],
    *,
    destinations: Sequence[str] | str = (),
    backup: KotomiBackupResource | None = None,
    retention: RetentionPolicyResource | None = None,
    notifier: AlertNotifier | None = None,
    cadence: Cadence | None = None,
    upload_retries: int = config.UPLOAD_RETRIES.default,
    upload_retry_delay: float = config.UPLOAD_RETRY_DELAY.default,
    thresholds: Thresholds | None = None,
    restore_test_sample: int = config.RESTORE_TEST_SAMPLE.default,
    owners: Sequence[str] = DEFAULT_OWNERS,
) -> Definitions:
    """Backups of `databases` ({name: path}, or DatabaseSpecs) to `destinations` (URLs).

    `backup` overrides the settings resource (keys, verify mode, format, staging, S3/GCS
    clients); its `backup_url` is then the destinations. Paths and secrets may be `EnvVar`s.
    """
    specs = (
        tuple(DatabaseSpec(name, path) for name, path in databases.items())
        if isinstance(databases, Mapping)
        else tuple(databases)
    )
    urls = [destinations] if isinstance(destinations, str) else list(destinations)
    if backup is None:
        backup = KotomiBackupResource(  # with several databases, no default one to name
            name=specs[0].name if len(specs) == 1 else None, backup_url=",".join(urls)
        )
    elif not urls:  # an EnvVar is read now: its URLs' kinds show in the UI
        urls = config.split_urls(resolved(backup.backup_url))
    options = KotomiBackupOptions(
        databases=specs,
        backup=backup,
        retention=retention or RetentionPolicyResource(),
        notifier=notifier or AlertNotifier(),
        cadence=cadence or Cadence(),
        upload_retries=upload_retries,
        upload_retry_delay=upload_retry_delay,
        thresholds=thresholds,
        restore_test_sample=restore_test_sample,
        owners=tuple(owners),
        destination_urls=tuple(urls),
    )
    return build_definitions(options)
