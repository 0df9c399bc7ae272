"""Everything the Dagster layer decides when the code location loads, checked there.

One `KotomiBackupOptions` is built either from the environment (`options_from_env`, the
documented KOTOMI_* variables) or from a `defs.yaml` (component.py), and handed to
`build_kotomi_backup_defs`. A bad value fails the load with one line (`dg check defs`,
`dagster definitions validate`), not the first run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import Backoff, Jitter, RetryPolicy
from dagster._utils.schedules import cron_string_iterator

from ..engine.errors import ConfigError
from ..engine.health import Thresholds
from ..engine.retention import RetentionPolicy
from ..engine.settings import BackupSettings
from ..engine.stores import safe_url, url_scheme
from .alerts.resources import AlertNotifier, alert_notifier_from_env
from .backup.resources import KotomiBackupResource, backup_resource_from_env
from .databases import DatabaseSpec, databases_from_env
from .retention.resources import RetentionPolicyResource, retention_resource_from_env

DAILY_AT_2 = "0 2 * * *"
HOURLY = "0 * * * *"
EVERY_15_MINUTES = "*/15 * * * *"
OFF = ("off", "none", "no", "0")
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

    backup: str | None = None
    frequent: str | None = EVERY_15_MINUTES
    prune: str = DAILY_AT_3
    drill: str = WEEKLY_SUNDAY_4
    restore_test: str = MONTHLY_FIRST_5
    timezone: str = "UTC"


@dataclass(frozen=True)
class KotomiBackupOptions:
    databases: tuple[DatabaseSpec, ...]
    backup: KotomiBackupResource
    retention: RetentionPolicyResource = field(default_factory=RetentionPolicyResource)
    notifier: AlertNotifier = field(default_factory=AlertNotifier)
    cadence: Cadence = Cadence()
    upload_retries: int = 2
    upload_retry_delay: float = 10.0
    thresholds: Thresholds | None = None  # None: from the backup interval
    restore_test_sample: int = 0  # N > 0: the monthly test drills only the N oldest
    run_history_days: int = 30  # Dagster runs kept (history.py); 0 keeps them all
    owners: tuple[str, ...] = DEFAULT_OWNERS
    # Destination URLs known at load (for asset kinds); the resource may resolve them later.
    destination_urls: tuple[str, ...] = ()

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
        fields = {name: _value(getattr(resource, name)) for name in type(resource).model_fields}
        return RetentionPolicyResource.model_construct(**fields).policy()

    def health_thresholds(self) -> Thresholds:
        if self.thresholds is not None:
            return self.thresholds
        return Thresholds.from_env({}, backup_interval=self.backup_interval())

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
        try:
            self.retention_policy()
        except ValueError as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None
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
                    f"{what} cron {cron!r} is not a cron expression (e.g. '0 2 * * *')"
                ) from None
        if self.upload_retries < 0 or self.upload_retry_delay < 0:
            raise ConfigError("upload retries and their delay cannot be negative")
        if self.run_history_days < 0:
            raise ConfigError("KOTOMI_BACKUP_RUN_HISTORY_DAYS cannot be negative (0 keeps all)")
        if self.restore_test_sample < 0:
            raise ConfigError("the restore test sample cannot be negative (0 drills every backup)")
        for owner in self.owners:
            if not (owner.startswith("team:") or "@" in owner):
                raise ConfigError(f"owner {owner!r}: use an email address or team:<name>")
        return self


def _value(value: Any) -> Any:
    """A resource field's value now (an EnvVar is read from the environment)."""
    # EnvVar (a str) and EnvVar.int (an int) both name their variable.
    return value.get_value() if hasattr(value, "env_var_name") else value


def _resolved_settings(resource: KotomiBackupResource, spec: DatabaseSpec) -> BackupSettings:
    """The engine's settings as a run would build them, to check them at load."""
    fields = {name: _value(getattr(resource, name)) for name in type(resource).model_fields}
    resolved = KotomiBackupResource.model_construct(**fields)
    settings = resolved.settings(spec)
    if not 0 <= int(resolved.client_retries) <= 20:
        raise ConfigError(f"KOTOMI_BACKUP_RETRIES {resolved.client_retries}: use 0 to 20")
    return settings


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r} is not a whole number") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r} is not a number of seconds") from None


def options_from_env(environ: Mapping[str, str] | None = None) -> KotomiBackupOptions:
    """The documented KOTOMI_* variables, checked now. Resources keep EnvVar references, so
    the UI shows variable names and runs read the values of their own environment."""
    env = os.environ if environ is None else environ
    try:
        databases = tuple(databases_from_env(env))
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    for name in ("KOTOMI_BACKUP_RETRIES", "KOTOMI_BACKUP_SMTP_PORT"):
        _env_int(env, name, 0)
    verify = (env.get("KOTOMI_BACKUP_VERIFY") or "quick").strip()
    if verify not in ("quick", "full"):
        raise ConfigError(f"KOTOMI_BACKUP_VERIFY {verify!r}: use quick or full")
    BackupSettings.from_env(env)  # profile, format, time zone, name, snapshot timeout
    try:
        RetentionPolicy.from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    security = (env.get("KOTOMI_BACKUP_SMTP_SECURITY") or "starttls").strip().lower()
    if security not in ("starttls", "ssl", "none"):
        raise ConfigError(f"KOTOMI_BACKUP_SMTP_SECURITY {security!r}: use starttls, ssl or none")
    frequent = (env.get("KOTOMI_BACKUP_FREQUENT_CRON") or "").strip() or EVERY_15_MINUTES
    cadence = Cadence(
        backup=(env.get("KOTOMI_BACKUP_CRON") or "").strip() or None,
        frequent=None if frequent.lower() in OFF else frequent,
        timezone=(env.get("KOTOMI_BACKUP_TIMEZONE") or "UTC").strip() or "UTC",
    )
    options = KotomiBackupOptions(
        databases=databases,
        backup=backup_resource_from_env(databases[0] if len(databases) == 1 else None),
        retention=retention_resource_from_env(),
        notifier=alert_notifier_from_env(),
        cadence=cadence,
        upload_retries=_env_int(env, "KOTOMI_BACKUP_UPLOAD_RETRIES", 2),
        upload_retry_delay=_env_float(env, "KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", 10.0),
        restore_test_sample=_env_int(env, "KOTOMI_BACKUP_RESTORE_TEST_SAMPLE", 0),
        run_history_days=_env_int(env, "KOTOMI_BACKUP_RUN_HISTORY_DAYS", 30),
        destination_urls=tuple(
            u.strip() for u in (env.get("KOTOMI_BACKUP_URL") or "").split(",") if u.strip()
        ),
    )
    for name, cron in (
        ("KOTOMI_BACKUP_CRON", options.backup_cron),
        ("KOTOMI_BACKUP_FREQUENT_CRON", cadence.frequent or DAILY_AT_2),
    ):
        try:
            cron_interval(cron, cadence.timezone)
        except Exception:
            raise ConfigError(
                f"{name} {cron!r} is not a cron expression (e.g. '{EVERY_15_MINUTES}'; "
                "off turns the frequent backup off)"
            ) from None
    thresholds = Thresholds.from_env(env, backup_interval=options.backup_interval())
    return replace(options, thresholds=thresholds).check()


def interval_of(options: KotomiBackupOptions) -> timedelta:
    return options.backup_interval()
