"""Everything the Dagster layer decides when the code location loads, checked there.

One `KotomiBackupOptions` is built either from the environment (`options_from_env`, the
KOTOMI_* variables of the settings table, engine/config.py) or from a `defs.yaml`
(component.py), and handed to `build_kotomi_backup_defs`. A bad value fails the load with
one line (`dg check defs`, `dagster definitions validate`), not the first run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from dagster import Backoff, Jitter, RetryPolicy, get_dagster_logger
from dagster._utils.schedules import cron_string_iterator

from ..engine import config
from ..engine.config import DAILY_AT_2, EVERY_15_MINUTES
from ..engine.errors import ConfigError
from ..engine.health import Thresholds
from ..engine.keeper.guard import KeeperSettings
from ..engine.retention import RetentionPolicy
from ..engine.settings import BackupSettings
from ..engine.stores import safe_url, url_scheme
from .alerts.resources import AlertNotifier, alert_notifier_from_env
from .backup.resources import KotomiBackupResource, backup_resource_from_env
from .databases import DatabaseSpec, databases_from_env
from .envvars import resolved
from .retention.resources import RetentionPolicyResource, retention_resource_from_env

# Dagster's own logger tree: the code server and `dg check defs` print its lines.
LOAD_LOG = get_dagster_logger("kotomi_backup")

HOURLY = "0 * * * *"
DAILY_AT_3 = "0 3 * * *"
WEEKLY_SUNDAY_4 = "0 4 * * 0"
MONTHLY_FIRST_5 = "0 5 1 * *"
DEFAULT_OWNERS = ("team:kotomi-ops",)


def cron_interval(cron: str, timezone: str = "UTC", samples: int = 8) -> timedelta:
    """The longest gap between consecutive ticks of a cron schedule (daily: 24 h)."""
    ticks = cron_string_iterator(datetime(2026, 1, 5, tzinfo=UTC).timestamp(), cron, timezone)
    times = [next(ticks) for _ in range(samples + 1)]
    return max(b - a for a, b in itertools.pairwise(times))


# Where each destination scheme shows in the UI (asset kinds).
SCHEME_KINDS = {"s3": "s3", "gs": "gcs", "file": "file", "": "file"}


@dataclass(frozen=True)
class Cadence:
    """Cron strings, in `timezone`. `backup` None: daily at 02:00, or hourly when hourly
    retention tiers are kept (and no frequent backup runs). `frequent`: a paged backup that
    often (every 15 minutes: the RPO), beside the daily full one; None: off."""

    backup: str | None = config.CRON.default
    frequent: str | None = config.FREQUENT_CRON.default
    prune: str = DAILY_AT_3
    drill: str = WEEKLY_SUNDAY_4
    restore_test: str = MONTHLY_FIRST_5
    timezone: str = config.TIMEZONE.default


@dataclass(frozen=True)
class KotomiBackupOptions:
    databases: tuple[DatabaseSpec, ...]
    backup: KotomiBackupResource
    retention: RetentionPolicyResource = field(default_factory=RetentionPolicyResource)
    notifier: AlertNotifier = field(default_factory=AlertNotifier)
    cadence: Cadence = Cadence()
    upload_retries: int = config.UPLOAD_RETRIES.default
    upload_retry_delay: float = config.UPLOAD_RETRY_DELAY.default
    thresholds: Thresholds | None = None  # None: from the backup interval
    restore_test_sample: int = config.RESTORE_TEST_SAMPLE.default  # N > 0: the N oldest only
    run_history_days: int = config.RUN_HISTORY_DAYS.default  # runs kept (history.py); 0: all
    owners: tuple[str, ...] = DEFAULT_OWNERS
    # Destination URLs known at load (for asset kinds); the resource may resolve them later.
    destination_urls: tuple[str, ...] = ()
    # The role of this code location and the keeper's locks (docs/immutability.md).
    keeper: KeeperSettings = field(default_factory=KeeperSettings)

    @property
    def writes(self) -> bool:
        """It takes backups (the writer's part): role writer or both."""
        return self.keeper.role in ("writer", "both")

    @property
    def keeps(self) -> bool:
        """It prunes, locks and drills (the keeper's part): role keeper or both."""
        return self.keeper.role in ("keeper", "both")

    @property
    def hourly(self) -> bool:
        """The hourly backup schedule is on: hourly tiers are kept (a count, or -1: all) and
        no frequent backup fills them already."""
        return self.retention_policy().keep_hourly != 0 and not self.cadence.frequent

    def backup_interval(self) -> timedelta:
        """The longest wait for the next backup: the frequent cadence's when it is on."""
        crons = [self.backup_cron, *([self.cadence.frequent] if self.cadence.frequent else [])]
        return min(cron_interval(c, self.cadence.timezone) for c in crons)

    @property
    def backup_cron(self) -> str:
        if self.cadence.backup:
            return self.cadence.backup
        return HOURLY if self.hourly else DAILY_AT_2

    def retention_policy(self) -> RetentionPolicy:
        """The policy as a run would read it (environment variables resolved now)."""
        resource = self.retention
        fields = {name: resolved(getattr(resource, name)) for name in type(resource).model_fields}
        return RetentionPolicyResource.model_construct(**fields).policy()

    def health_thresholds(self) -> Thresholds:
        if self.thresholds is not None:
            return self.thresholds
        return Thresholds.defaults(self.backup_interval())

    def upload_retry_policy(self) -> RetryPolicy:
        """Step-level retries of the upload, on top of the stores' per-request retries: they
        ride out outages of minutes. Delays grow 1x, 3x, 7x the base, each +- the base."""
        return RetryPolicy(
            max_retries=self.upload_retries,
            delay=self.upload_retry_delay,
            backoff=Backoff.EXPONENTIAL,
            jitter=Jitter.PLUS_MINUS,
        )

    @property
    def destination_kinds(self) -> set[str]:
        return {SCHEME_KINDS.get(url_scheme(u), "file") for u in self.destination_urls} or {"file"}

    def check(self) -> KotomiBackupOptions:
        """Every value that can be checked before a run, checked: raises ConfigError, one line."""
        if not self.databases:
            raise ConfigError("no database configured: give at least one")
        keys = [d.key for d in self.databases]
        if len(set(keys)) != len(keys):
            raise ConfigError("two databases share a name")
        for url in self.destination_urls:
            if url_scheme(url) not in SCHEME_KINDS:
                raise ConfigError(
                    f"destination {safe_url(url)!r}: use a directory, file:///abs/dir, "
                    "s3://bucket/prefix or gs://bucket/prefix"
                )
        _resolved_settings(self.backup, self.databases[0])
        self.retention_policy()
        for what, cron in (
            ("backup", self.backup_cron),
            ("frequent backup", self.cadence.frequent or DAILY_AT_2),
            ("prune", self.cadence.prune),
            ("drill", self.cadence.drill),
            ("restore test", self.cadence.restore_test),
        ):
            try:
                cron_interval(cron, self.cadence.timezone)
            except Exception:
                raise ConfigError(
                    f"{what} cron {cron!r} is not a cron expression (e.g. '{DAILY_AT_2}')"
                ) from None
        config.UPLOAD_RETRIES.check(self.upload_retries)
        config.UPLOAD_RETRY_DELAY.check(self.upload_retry_delay)
        config.RUN_HISTORY_DAYS.check(self.run_history_days)
        config.RESTORE_TEST_SAMPLE.check(self.restore_test_sample)
        for owner in self.owners:
            if not (owner.startswith("team:") or "@" in owner):
                raise ConfigError(f"owner {owner!r}: use an email address or team:<name>")
        return self


def _resolved_settings(resource: KotomiBackupResource, spec: DatabaseSpec) -> BackupSettings:
    """The engine's settings as a run would build them, to check them at load."""
    fields = {name: resolved(getattr(resource, name)) for name in type(resource).model_fields}
    resolved_resource = KotomiBackupResource.model_construct(**fields)
    resolved_resource.store_options()  # retries, S3 encryption
    return resolved_resource.settings(spec)


def options_from_env(environ: Mapping[str, str] | None = None) -> KotomiBackupOptions:
    """The KOTOMI_* variables, every one checked now (the settings table). Resources keep
    EnvVar references, so the UI shows variable names and runs read the values of their own
    environment."""
    config.read_all(environ)
    databases = tuple(databases_from_env(environ))
    timezone = config.TIMEZONE.read(environ)
    cadence = Cadence(
        backup=config.CRON.read(environ),
        frequent=config.FREQUENT_CRON.read(environ),
        timezone=timezone,
    )
    options = KotomiBackupOptions(
        databases=databases,
        backup=backup_resource_from_env(databases[0] if len(databases) == 1 else None, environ),
        retention=retention_resource_from_env(environ),
        notifier=alert_notifier_from_env(environ),
        cadence=cadence,
        upload_retries=config.UPLOAD_RETRIES.read(environ),
        upload_retry_delay=config.UPLOAD_RETRY_DELAY.read(environ),
        restore_test_sample=config.RESTORE_TEST_SAMPLE.read(environ),
        run_history_days=config.RUN_HISTORY_DAYS.read(environ),
        destination_urls=config.URL.read(environ),
        keeper=KeeperSettings.from_env(environ),
    )
    for setting, cron, expected in (
        (config.CRON, options.backup_cron, f"give a cron expression, e.g. '{DAILY_AT_2}'"),
        (
            config.FREQUENT_CRON,
            cadence.frequent or DAILY_AT_2,
            f"give a cron expression, e.g. '{EVERY_15_MINUTES}', or off",
        ),
    ):
        try:
            cron_interval(cron, timezone)
        except Exception:
            raise setting.refuse(cron, expected) from None
    thresholds = Thresholds.from_env(environ, backup_interval=options.backup_interval())
    checked = replace(options, thresholds=thresholds).check()
    warn_unknown_variables(environ)
    return checked


def warn_unknown_variables(
    environ: Mapping[str, str] | None = None, also_known: Iterable[str] = ()
) -> list[str]:
    """The CLI's warning for each KOTOMI_BACKUP_* variable that is no setting, as a log line
    where the code location loads (the code server's log, `dg check defs`, `dg dev`): the
    location loads, the misspelt setting is not read."""
    lines = config.unknown_variables(environ, also_known)
    for line in lines:
        if line not in _WARNED:  # once per process: Dagster may build the definitions twice
            _WARNED.add(line)
            LOAD_LOG.warning(line)
    return lines


_WARNED: set[str] = set()


def interval_of(options: KotomiBackupOptions) -> timedelta:
    return options.backup_interval()
