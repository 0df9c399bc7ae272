"""The retention policy as a resource, from KOTOMI_BACKUP_KEEP_* (one policy for every database)."""

import os

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from ...engine.retention import RetentionPolicy

KEEP_DEFAULTS = {"last": 0, "hourly": 0, "daily": 7, "weekly": 4, "monthly": 12, "yearly": 3}


class RetentionPolicyResource(ConfigurableResource):  # type: ignore[type-arg]
    keep_last: int = Field(default=0)
    keep_hourly: int = Field(default=0)
    keep_daily: int = Field(default=7)
    keep_weekly: int = Field(default=4)
    keep_monthly: int = Field(default=12)
    keep_yearly: int = Field(default=3)
    keep_within: str = Field(default="", description="e.g. 2d, 36h, 1y2m (restic durations)")
    timezone: str = Field(default="UTC", description="Buckets are cut in this zone.")

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy.from_env(
            {
                **{
                    f"KOTOMI_BACKUP_KEEP_{k.upper()}": str(getattr(self, f"keep_{k}"))
                    for k in KEEP_DEFAULTS
                },
                "KOTOMI_BACKUP_KEEP_WITHIN": self.keep_within,
                "KOTOMI_BACKUP_TIMEZONE": self.timezone,
            }
        )


def retention_resource_from_env() -> RetentionPolicyResource:
    fields: dict[str, object] = {}
    for kind in KEEP_DEFAULTS:
        name = f"KOTOMI_BACKUP_KEEP_{kind.upper()}"
        if os.environ.get(name):
            fields[f"keep_{kind}"] = EnvVar.int(name)
    for field, name in (
        ("keep_within", "KOTOMI_BACKUP_KEEP_WITHIN"),
        ("timezone", "KOTOMI_BACKUP_TIMEZONE"),
    ):
        if os.environ.get(name):
            fields[field] = EnvVar(name)
    return RetentionPolicyResource(**fields)  # type: ignore[arg-type]
