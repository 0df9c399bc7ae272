"""The settings of one backup, restore or drill: from the environment (the settings table,
config.py), CLI flags and the Dagster resource override them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import config
from .archive import AgeIdentity
from .config import FormatName
from .errors import ConfigError
from .priority import Priority
from .verify import Profile, VerifyMode

DEFAULT_NAME = config.NAME.default


def default_staging_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kotomi-backup" / "staging"


# Each field's setting: its default, and the check of any value it is given.
_CHECKED: dict[str, config.Setting[Any]] = {
    "name": config.NAME,
    "timezone": config.TIMEZONE,
    "verify_mode": config.VERIFY,
    "profile": config.PROFILE,
    "snapshot_timeout": config.SNAPSHOT_TIMEOUT,
    "backup_format": config.FORMAT,
    "deadline": config.DEADLINE,
    "keep_staged": config.KEEP_STAGED,
    "priority": config.PRIORITY,
    "read_mbps": config.READ_MBPS,
}


@dataclass(frozen=True)
class BackupSettings:
    db_path: Path | None = None
    urls: tuple[str, ...] = ()
    name: str = config.NAME.default
    age_recipients: str | None = None  # public keys: not secret
    age_identity: AgeIdentity | None = None  # a key file, or the key itself (never shown)
    timezone: str = config.TIMEZONE.default
    verify_mode: VerifyMode = config.VERIFY.default
    profile: Profile = config.PROFILE.default
    staging_dir: Path = Path()
    snapshot_timeout: float = config.SNAPSHOT_TIMEOUT.default
    backup_format: FormatName = config.FORMAT.default  # engine/formats/
    # Seconds a backup may take before its store requests give up (stores/timeouts.py);
    # None: no deadline.
    deadline: float | None = config.DEADLINE.default
    # Failed Dagster runs' staged backups kept for re-execution, newest first, per database.
    keep_staged: int = config.KEEP_STAGED.default
    # Low: the work of a backup, drill, prune or verify yields to Kotomi (engine/priority.py).
    priority: Priority = config.PRIORITY.default
    # MB/s at most read from the live database; None: no ceiling.
    read_mbps: float | None = config.READ_MBPS.default

    def __post_init__(self) -> None:
        # Flags and resource fields pass the variables' checks; values are normalised as
        # the table reads them ("PAGED" is paged).
        for name, setting in _CHECKED.items():
            object.__setattr__(self, name, setting.check(getattr(self, name)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BackupSettings:
        """The settings the environment gives (default: this process's), with `overrides`
        (CLI flags, resource fields) put over them; a None override is no override."""
        identity = config.AGE_IDENTITY.read(environ)
        settings = cls(
            db_path=config.DB_PATH.read(environ),
            urls=config.URL.read(environ),
            name=config.NAME.read(environ),
            age_recipients=config.AGE_RECIPIENTS.read(environ),
            age_identity=AgeIdentity.from_setting(identity) if identity else None,
            timezone=config.TIMEZONE.read(environ),
            verify_mode=config.VERIFY.read(environ),
            profile=config.PROFILE.read(environ),
            staging_dir=config.STAGING_DIR.read(environ) or default_staging_dir(environ),
            snapshot_timeout=config.SNAPSHOT_TIMEOUT.read(environ),
            backup_format=config.FORMAT.read(environ),
            deadline=config.DEADLINE.read(environ),
            keep_staged=config.KEEP_STAGED.read(environ),
            priority=config.PRIORITY.read(environ),
            read_mbps=config.READ_MBPS.read(environ),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given) if given else settings

    def require_db(self) -> Path:
        if self.db_path is None:
            raise ConfigError("no database given: pass --db PATH or set KOTOMI_DB_PATH")
        return self.db_path

    @property
    def page_hash_cache(self) -> Path:
        """Page hashes of recent paged backups (engine/paged/hashes.py), per database."""
        return self.staging_dir / self.name / "page-hashes"

    def lock_memory(self, url: str) -> Path:
        """What the keeper last read of the locks at `url` (keeper/locks.py: LockMemory)."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return self.staging_dir / self.name / f"locks-{digest}.json"

    def identities(self) -> list[Any]:
        """The age identities for restores and drills (none when no key is set)."""
        return self.age_identity.load() if self.age_identity else []

    def require_urls(self) -> tuple[str, ...]:
        if not self.urls:
            raise ConfigError("no destination given: pass --to URL or set KOTOMI_BACKUP_URL")
        return self.urls
