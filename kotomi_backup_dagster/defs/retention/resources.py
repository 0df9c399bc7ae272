"""The retention policy as a resource, from KOTOMI_BACKUP_KEEP_* (one policy for every database)."""

from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource

from ...engine import config
from ...engine.retention import RetentionPolicy
from ..envvars import env_fields, setting_field

# Resource field -> its setting.
RETENTION_FIELDS: dict[str, config.Setting[Any]] = {
    **config.KEEP_COUNTS,
    "keep_within": config.KEEP_WITHIN,
    "timezone": config.TIMEZONE,
}


class RetentionPolicyResource(ConfigurableResource):  # type: ignore[type-arg]
    keep_last: int = setting_field(config.KEEP_LAST)
    keep_hourly: int = setting_field(config.KEEP_HOURLY)
    keep_daily: int = setting_field(config.KEEP_DAILY)
    keep_weekly: int = setting_field(config.KEEP_WEEKLY)
    keep_monthly: int = setting_field(config.KEEP_MONTHLY)
    keep_yearly: int = setting_field(config.KEEP_YEARLY)
    keep_within: str = setting_field(config.KEEP_WITHIN, default="")
    timezone: str = setting_field(config.TIMEZONE, note="; retention buckets are cut in it")

    def policy(self) -> RetentionPolicy:
        """The policy, each value checked as its variable would be (ConfigError, one line)."""
        values = {field: s.check(getattr(self, field)) for field, s in RETENTION_FIELDS.items()}
        return RetentionPolicy(**values)


def retention_resource_from_env(
    environ: Mapping[str, str] | None = None,
) -> RetentionPolicyResource:
    return RetentionPolicyResource(**env_fields(RETENTION_FIELDS, environ))
