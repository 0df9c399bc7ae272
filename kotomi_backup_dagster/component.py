"""`KotomiBackupComponent`: the whole backup pipeline in a `dg` project, configured in YAML.

    dg scaffold defs kotomi_backup_dagster.component.KotomiBackupComponent kotomi_backup

then edit `defs/kotomi_backup/defs.yaml` (README, "As a dg component"). Values that must
not show in the UI (the webhook URL, the SMTP password, key files) are given by environment
variable name, `{env: NAME}`, and read when a run needs them. Every value is checked when
the project loads (`dg check defs`), with one line saying what is wrong.
"""

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster import EnvVar

from .defs.alerts.resources import AlertNotifier
from .defs.backup.resources import KotomiBackupResource
from .defs.databases import DatabaseSpec
from .defs.envvars import env_var_if_set
from .defs.factory import build_definitions
from .defs.options import (
    DAILY_AT_3,
    DEFAULT_OWNERS,
    MONTHLY_FIRST_5,
    WEEKLY_SUNDAY_4,
    Cadence,
    KotomiBackupOptions,
    interval_of,
    warn_unknown_variables,
)
from .defs.retention.resources import RetentionPolicyResource
from .engine import config
from .engine.config import DAILY_AT_2, EVERY_15_MINUTES
from .engine.errors import ConfigError
from .engine.health import Thresholds, default_burst_limit, default_stale_after
from .engine.keeper.guard import KeeperSettings
from .engine.manifest import check_name


class Env(dg.Model):
    """A value read from an environment variable when a run needs it (never shown)."""

    env: str


Text = str | Env


def _text(value: Text | None) -> Any:
    """An optional value: a variable unset where the code location loads means not set (a
    run would otherwise fail resolving it)."""
    if isinstance(value, Env):
        return env_var_if_set(value.env)
    return value


def _now(value: Text | None) -> str | None:
    """The value at load, to check it (an unset variable reads as None)."""
    if isinstance(value, Env):
        return EnvVar(value.env).get_value()
    return value


class Database(dg.Model):
    name: str
    path: Text


# Defaults and checks: the settings table (engine/config.py), as for the variables.
class Retention(dg.Model):
    keep_last: int = config.KEEP_LAST.default
    keep_hourly: int = config.KEEP_HOURLY.default
    keep_daily: int = config.KEEP_DAILY.default
    keep_weekly: int = config.KEEP_WEEKLY.default
    keep_monthly: int = config.KEEP_MONTHLY.default
    keep_yearly: int = config.KEEP_YEARLY.default
    keep_within: str = ""


class Schedules(dg.Model):
    """Cron strings in `timezone`; `backup` unset: daily 02:00, or hourly with hourly tiers;
    `frequent`: a paged backup every 15 minutes by default (null or "off": none)."""

    backup: str | None = config.CRON.default
    frequent: str | None = config.FREQUENT_CRON.default
    prune: str = DAILY_AT_3
    drill: str = WEEKLY_SUNDAY_4
    restore_test: str = MONTHLY_FIRST_5


class Alerts(dg.Model):
    webserver_url: str = config.WEBSERVER_URL.default
    webhook_url: Text | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str = config.SMTP_SECURITY.default
    smtp_user: Text | None = None
    smtp_password: Text | None = None
    smtp_from: str | None = None
    smtp_to: list[str] = []
    slack_token: Text | None = None
    slack_channel: str | None = None
    stale_hours: float | None = config.STALE_HOURS.default  # 1.5x the backup interval
    drill_overdue_days: float = config.DRILL_OVERDUE_DAYS.default
    size_drop_ratio: float = config.SIZE_DROP_RATIO.default


# Each attribute's setting: a bad value is refused with the setting's line, named by its key.
CHECKED_ATTRIBUTES: dict[str, config.Setting[Any]] = {
    "verify": config.VERIFY,
    "profile": config.PROFILE,
    "format": config.FORMAT,
    "timezone": config.TIMEZONE,
    "upload_retries": config.UPLOAD_RETRIES,
    "upload_retry_delay": config.UPLOAD_RETRY_DELAY,
    "restore_test_sample": config.RESTORE_TEST_SAMPLE,
    "role": config.ROLE,
    "lock": config.LOCK,
    "lock_slack": config.LOCK_SLACK,
    **{f"retention.{field}": s for field, s in config.KEEP_COUNTS.items()},
    "retention.keep_within": config.KEEP_WITHIN,
    "alerts.smtp_port": config.SMTP_PORT,
    "alerts.smtp_security": config.SMTP_SECURITY,
    "alerts.stale_hours": config.STALE_HOURS,
    "alerts.drill_overdue_days": config.DRILL_OVERDUE_DAYS,
    "alerts.size_drop_ratio": config.SIZE_DROP_RATIO,
}


# What `dg scaffold defs` writes: a working start, secrets by variable name.
EXAMPLE_ATTRIBUTES: dict[str, Any] = {
    "databases": [{"name": config.NAME.default, "path": {"env": config.DB_PATH.name}}],
    "destinations": ["/var/backups/kotomi"],
    "age_recipients": {"env": config.AGE_RECIPIENTS.name},
    "age_identity": {"env": config.AGE_IDENTITY.name},
    "timezone": config.TIMEZONE.default,
    "retention": {f: s.default for f, s in config.KEEP_COUNTS.items() if s.default},
    "schedules": {"backup": DAILY_AT_2, "frequent": EVERY_15_MINUTES},
    "alerts": {"webhook_url": {"env": config.ALERT_WEBHOOK_URL.name}},
}


class KotomiBackupScaffolder(dg.Scaffolder):
    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, EXAMPLE_ATTRIBUTES)


@dg.scaffold_with(KotomiBackupScaffolder)
class KotomiBackupComponent(dg.Component, dg.Model, dg.Resolvable):
    """Verified backups of Kotomi's SQLite databases (or any SQLite database): snapshot,
    verify, compress (+age), upload to local/S3/GCS destinations, prune by retention tiers,
    weekly restore drills, monthly restore tests, freshness and alerts."""

    databases: list[Database]
    destinations: list[str]
    age_recipients: Text | None = None
    age_identity: Text | None = None
    verify: str = config.VERIFY.default
    profile: str = config.PROFILE.default
    format: str = config.FORMAT.default
    staging_dir: str | None = None
    timezone: str = config.TIMEZONE.default
    retention: Retention = Retention()
    schedules: Schedules = Schedules()
    alerts: Alerts = Alerts()
    upload_retries: int = config.UPLOAD_RETRIES.default
    upload_retry_delay: float = config.UPLOAD_RETRY_DELAY.default
    restore_test_sample: int = config.RESTORE_TEST_SAMPLE.default
    owners: list[str] = list(DEFAULT_OWNERS)
    # docs/immutability.md: `writer` on Kotomi's host, `keeper` on a trusted one.
    role: str = config.ROLE.default
    lock: str = config.LOCK.default
    lock_slack: str = "10d"

    def options(self) -> KotomiBackupOptions:
        """The component's values as the factory's options, checked (ConfigError, one line)."""
        for key, setting in CHECKED_ATTRIBUTES.items():
            value: Any = self
            for part in key.split("."):
                value = getattr(value, part)
            setting.check(value, label=key)
        specs: list[DatabaseSpec] = []
        for db in self.databases:
            try:
                name = check_name(db.name)
            except ValueError as exc:
                raise ConfigError(f"databases: {exc}") from None
            path = _now(db.path)
            if not path:
                raise ConfigError(f"database {name}: its path is empty (or its variable unset)")
            specs.append(DatabaseSpec(name=name, db_path=path))
        backup = KotomiBackupResource(
            name=specs[0].name if len(specs) == 1 else None,  # several: each run names one
            backup_url=",".join(self.destinations),
            age_recipients=_text(self.age_recipients),
            age_identity=_text(self.age_identity),
            timezone=self.timezone,
            verify_mode=self.verify,
            profile=self.profile,
            backup_format=self.format,
            staging_dir=self.staging_dir,
        )
        notifier = AlertNotifier(
            webserver_base_url=self.alerts.webserver_url,
            webhook_url=_text(self.alerts.webhook_url),
            smtp_host=self.alerts.smtp_host,
            smtp_port=self.alerts.smtp_port,
            smtp_security=self.alerts.smtp_security,
            smtp_user=_text(self.alerts.smtp_user),
            smtp_password=_text(self.alerts.smtp_password),
            smtp_from=self.alerts.smtp_from,
            smtp_to=", ".join(self.alerts.smtp_to) or None,
            slack_token=_text(self.alerts.slack_token),
            slack_channel=self.alerts.slack_channel,
        )
        options = KotomiBackupOptions(
            databases=tuple(specs),
            backup=backup,
            retention=RetentionPolicyResource(
                **self.retention.model_dump(), timezone=self.timezone
            ),
            notifier=notifier,
            cadence=Cadence(
                backup=self.schedules.backup,
                frequent=config.FREQUENT_CRON.check(self.schedules.frequent or "off"),
                prune=self.schedules.prune,
                drill=self.schedules.drill,
                restore_test=self.schedules.restore_test,
                timezone=self.timezone,
            ),
            upload_retries=self.upload_retries,
            upload_retry_delay=self.upload_retry_delay,
            restore_test_sample=self.restore_test_sample,
            owners=tuple(self.owners),
            destination_urls=tuple(self.destinations),
            keeper=KeeperSettings(
                role=config.ROLE.check(self.role, label="role"),
                lock=config.LOCK.check(self.lock, label="lock"),
                slack=_slack(self.lock_slack),
            ),
        )
        return _with_thresholds(options, self.alerts)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        defs = build_definitions(self.options())
        # A defs.yaml key that is no attribute never gets here (Dagster refuses it, naming it);
        # a misspelt variable would be read by nobody, so it is said at load.
        warn_unknown_variables(also_known=self.variables())
        return defs

    def variables(self) -> set[str]:
        """The variables this defs.yaml names (`{env: NAME}`): read, so known."""
        return set(_env_names(self))


def _env_names(value: Any) -> Iterator[str]:
    if isinstance(value, Env):
        yield value.env
    elif isinstance(value, dg.Model):
        for name in type(value).model_fields:
            yield from _env_names(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            yield from _env_names(item)


def _slack(text: str) -> timedelta:
    slack = config.LOCK_SLACK.check(text, label="lock_slack")
    return slack.approximate() if slack is not None else timedelta(0)


def _with_thresholds(options: KotomiBackupOptions, alerts: Alerts) -> KotomiBackupOptions:
    options.check()
    stale = (
        timedelta(hours=alerts.stale_hours)
        if alerts.stale_hours is not None
        else default_stale_after(interval_of(options))
    )
    thresholds = Thresholds(
        burst_per_hour=default_burst_limit(interval_of(options)),
        stale_after=stale,
        drill_overdue_after=timedelta(days=alerts.drill_overdue_days),
        size_drop_ratio=alerts.size_drop_ratio,
    )
    return replace(options, thresholds=thresholds)


__all__: Sequence[str] = ["KotomiBackupComponent"]
