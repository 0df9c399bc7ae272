"""`KotomiBackupComponent`: the whole backup pipeline in a `dg` project, configured in YAML.

    dg scaffold defs kotomi_backup_dagster.component.KotomiBackupComponent kotomi_backup

then edit `defs/kotomi_backup/defs.yaml` (README, "As a dg component"). Values that must
not show in the UI (the webhook URL, the SMTP password, key files) are given by environment
variable name, `{env: NAME}`, and read when a run needs them. Every value is checked when
the project loads (`dg check defs`), with one line saying what is wrong.
"""

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster import EnvVar

from .defs.alerts.resources import AlertNotifier
from .defs.backup.resources import KotomiBackupResource
from .defs.databases import DatabaseSpec
from .defs.factory import build_definitions
from .defs.options import DEFAULT_OWNERS, EVERY_15_MINUTES, OFF, Cadence, KotomiBackupOptions
from .defs.retention.resources import RetentionPolicyResource
from .engine.errors import ConfigError
from .engine.health import Thresholds
from .engine.manifest import check_name


class Env(dg.Model):
    """A value read from an environment variable when a run needs it (never shown)."""

    env: str


Text = str | Env


def _text(value: Text | None) -> Any:
    """An optional value: a variable unset where the code location loads means not set (a
    run would otherwise fail resolving it)."""
    if isinstance(value, Env):
        return EnvVar(value.env) if os.environ.get(value.env) else None
    return value


def _now(value: Text | None) -> str | None:
    """The value at load, to check it (an unset variable reads as None)."""
    if isinstance(value, Env):
        return EnvVar(value.env).get_value()
    return value


class Database(dg.Model):
    name: str
    path: Text


class Retention(dg.Model):
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    keep_yearly: int = 3
    keep_within: str = ""


class Schedules(dg.Model):
    """Cron strings in `timezone`; `backup` unset: daily 02:00, or hourly with hourly tiers;
    `frequent`: a paged backup every 15 minutes by default (null or "off": none)."""

    backup: str | None = None
    frequent: str | None = EVERY_15_MINUTES
    prune: str = "0 3 * * *"
    drill: str = "0 4 * * 0"
    restore_test: str = "0 5 1 * *"


class Alerts(dg.Model):
    webserver_url: str = "http://127.0.0.1:3000"
    webhook_url: Text | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str = "starttls"
    smtp_user: Text | None = None
    smtp_password: Text | None = None
    smtp_from: str | None = None
    smtp_to: list[str] = []
    slack_token: Text | None = None
    slack_channel: str | None = None
    stale_hours: float | None = None  # default 1.5x the backup interval (36 h daily)
    drill_overdue_days: float = 8
    size_drop_ratio: float = 0.5


# What `dg scaffold defs` writes: a working start, secrets by variable name.
EXAMPLE_ATTRIBUTES: dict[str, Any] = {
    "databases": [{"name": "kotomi", "path": {"env": "KOTOMI_DB_PATH"}}],
    "destinations": ["/var/backups/kotomi"],
    "age_recipients": {"env": "KOTOMI_BACKUP_AGE_RECIPIENTS"},
    "age_identity": {"env": "KOTOMI_BACKUP_AGE_IDENTITY"},
    "timezone": "UTC",
    "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 3},
    "schedules": {"backup": "0 2 * * *", "frequent": "*/15 * * * *"},
    "alerts": {"webhook_url": {"env": "KOTOMI_BACKUP_ALERT_WEBHOOK_URL"}},
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
    verify: str = "quick"
    profile: str = "kotomi"
    format: str = "full"
    staging_dir: str | None = None
    timezone: str = "UTC"
    retention: Retention = Retention()
    schedules: Schedules = Schedules()
    alerts: Alerts = Alerts()
    upload_retries: int = 2
    upload_retry_delay: float = 10.0
    restore_test_sample: int = 0
    owners: list[str] = list(DEFAULT_OWNERS)

    def options(self) -> KotomiBackupOptions:
        """The component's values as the factory's options, checked (ConfigError, one line)."""
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
            name=specs[0].name if specs else "kotomi",
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
        if self.alerts.smtp_security not in ("starttls", "ssl", "none"):
            raise ConfigError(
                f"alerts.smtp_security {self.alerts.smtp_security!r}: use starttls, ssl or none"
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
                frequent=None
                if (self.schedules.frequent or "off").lower() in OFF
                else self.schedules.frequent,
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
        )
        return _with_thresholds(options, self.alerts)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.options())


def _with_thresholds(options: KotomiBackupOptions, alerts: Alerts) -> KotomiBackupOptions:
    from dataclasses import replace
    from datetime import timedelta

    from .defs.options import interval_of

    options.check()
    stale = (
        timedelta(hours=alerts.stale_hours)
        if alerts.stale_hours is not None
        else Thresholds.from_env({}, backup_interval=interval_of(options)).stale_after
    )
    try:
        thresholds = Thresholds(
            stale_after=stale,
            drill_overdue_after=timedelta(days=alerts.drill_overdue_days),
            size_drop_ratio=alerts.size_drop_ratio,
        )
    except ValueError as exc:
        raise ConfigError(f"alerts: {exc}") from None
    return replace(options, thresholds=thresholds)


__all__: Sequence[str] = ["KotomiBackupComponent"]
