"""The backup settings as a Dagster resource, read from the DESIGN.md environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from ...engine.settings import BackupSettings
from ...engine.stores import BackupStore, open_store
from ..databases import DatabaseSpec


class KotomiBackupResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where one database is read from and where its backups go."""

    name: str = Field(description="Backup name: the folder on every store, the asset prefix.")
    db_path: str = Field(description="The live SQLite database file (KOTOMI_DB_PATH).")
    backup_url: str = Field(description="Destination URL(s), comma-separated (KOTOMI_BACKUP_URL).")
    age_recipients: str | None = Field(
        default=None, description="age public keys; set = every archive is encrypted."
    )
    timezone: str = Field(default="UTC", description="For schedules and retention buckets.")
    verify_mode: str = Field(default="quick", description="quick (quick_check) or full.")
    profile: str = Field(default="kotomi", description="kotomi (Kotomi-aware checks) or generic.")
    staging_dir: str | None = Field(
        default=None, description="Local scratch space for snapshot and archive."
    )

    def settings(self) -> BackupSettings:
        overrides: dict[str, Any] = {
            "db_path": Path(self.db_path).expanduser(),
            "urls": tuple(u.strip() for u in self.backup_url.split(",") if u.strip()),
            "name": self.name,
            "age_recipients": self.age_recipients or None,
            "timezone": self.timezone,
            "verify_mode": self.verify_mode,
            "profile": self.profile,
        }
        if self.staging_dir:
            overrides["staging_dir"] = Path(self.staging_dir).expanduser()
        return BackupSettings.from_env(**overrides)

    def stores(self) -> list[BackupStore]:
        return [open_store(url) for url in self.settings().require_urls()]


def _env_or(name: str, default: Any) -> Any:
    """EnvVar when the variable is set (the UI shows the name, never the value), else default."""
    return EnvVar(name) if os.environ.get(name) else default


def backup_resource_from_env(spec: DatabaseSpec) -> KotomiBackupResource:
    return KotomiBackupResource(
        name=spec.name,
        db_path=spec.db_path or EnvVar("KOTOMI_DB_PATH"),
        backup_url=EnvVar("KOTOMI_BACKUP_URL"),
        age_recipients=_env_or("KOTOMI_BACKUP_AGE_RECIPIENTS", None),
        timezone=_env_or("KOTOMI_BACKUP_TIMEZONE", "UTC"),
        verify_mode=_env_or("KOTOMI_BACKUP_VERIFY", "quick"),
        profile=_env_or("KOTOMI_BACKUP_PROFILE", "kotomi"),
        staging_dir=_env_or("KOTOMI_BACKUP_STAGING_DIR", None),
    )
