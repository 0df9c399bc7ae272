"""Settings from the documented KOTOMI_* environment variables (README, Configure); CLI flags
override them."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .archive import AgeIdentity
from .errors import ConfigError
from .manifest import check_name
from .stores import split_urls
from .verify import PROFILES, VERIFY_MODES, Profile, VerifyMode

DEFAULT_NAME = "kotomi"
BACKUP_FORMATS = ("full", "paged")
DEFAULT_KEEP_STAGED = 3


def default_staging_dir(environ: Mapping[str, str]) -> Path:
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kotomi-backup" / "staging"


@dataclass(frozen=True)
class BackupSettings:
    db_path: Path | None = None
    urls: tuple[str, ...] = ()
    name: str = DEFAULT_NAME
    age_recipients: str | None = None  # public keys: not secret
    age_identity: AgeIdentity | None = None  # a key file, or the key itself (never shown)
    timezone: str = "UTC"
    verify_mode: VerifyMode = "quick"
    profile: Profile = "kotomi"
    staging_dir: Path = Path()
    snapshot_timeout: float = 300.0
    backup_format: str = "full"  # "paged": only changed pages are stored (engine/paged/)
    # Seconds a backup may take before its store requests give up (stores/timeouts.py);
    # None: no deadline. KOTOMI_BACKUP_DEADLINE, `backup --deadline`.
    deadline: float | None = None
    # Failed Dagster runs' staged backups kept for re-execution, newest first, per database.
    keep_staged: int = DEFAULT_KEEP_STAGED

    def __post_init__(self) -> None:
        if self.backup_format not in BACKUP_FORMATS:
            raise ConfigError(
                f"backup format {self.backup_format!r} (KOTOMI_BACKUP_FORMAT): use full or paged"
            )
        try:
            check_name(self.name)
        except ValueError as exc:
            raise ConfigError(f"KOTOMI_BACKUP_NAME: {exc}") from exc
        if self.verify_mode not in VERIFY_MODES:
            raise ConfigError(f"verify mode {self.verify_mode!r}: use quick or full")
        if self.deadline is not None and (not math.isfinite(self.deadline) or self.deadline <= 0):
            raise ConfigError(
                f"deadline {self.deadline!r} (KOTOMI_BACKUP_DEADLINE, --deadline): give a "
                "positive number of seconds"
            )
        if isinstance(self.keep_staged, bool) or not 1 <= self.keep_staged <= 100:
            raise ConfigError(
                f"KOTOMI_BACKUP_KEEP_STAGED {self.keep_staged!r}: give a whole number from 1 "
                "to 100 (staged backups kept for re-execution)"
            )
        if self.profile not in PROFILES:
            raise ConfigError(f"KOTOMI_BACKUP_PROFILE {self.profile!r}: use kotomi or generic")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"KOTOMI_BACKUP_TIMEZONE {self.timezone!r} is not a time zone (e.g. Europe/Berlin)"
            ) from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BackupSettings:
        env = os.environ if environ is None else environ
        db = env.get("KOTOMI_DB_PATH")
        identity = env.get("KOTOMI_BACKUP_AGE_IDENTITY")
        timeout_text = env.get("KOTOMI_BACKUP_SNAPSHOT_TIMEOUT", "300")
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(
                f"KOTOMI_BACKUP_SNAPSHOT_TIMEOUT {timeout_text!r}: "
                "give a positive number of seconds"
            )
        settings = cls(
            db_path=Path(db).expanduser() if db else None,
            urls=tuple(split_urls(env.get("KOTOMI_BACKUP_URL"))),
            name=env.get("KOTOMI_BACKUP_NAME") or DEFAULT_NAME,
            age_recipients=env.get("KOTOMI_BACKUP_AGE_RECIPIENTS") or None,
            age_identity=AgeIdentity.from_setting(identity) if identity else None,
            timezone=env.get("KOTOMI_BACKUP_TIMEZONE") or "UTC",
            verify_mode=cast(VerifyMode, env.get("KOTOMI_BACKUP_VERIFY") or "quick"),
            profile=cast(Profile, env.get("KOTOMI_BACKUP_PROFILE") or "kotomi"),
            staging_dir=Path(env["KOTOMI_BACKUP_STAGING_DIR"]).expanduser()
            if env.get("KOTOMI_BACKUP_STAGING_DIR")
            else default_staging_dir(env),
            snapshot_timeout=timeout,
            backup_format=(env.get("KOTOMI_BACKUP_FORMAT") or "full").strip().lower(),
            deadline=_seconds_or_none(env, "KOTOMI_BACKUP_DEADLINE"),
            keep_staged=_whole(env, "KOTOMI_BACKUP_KEEP_STAGED", DEFAULT_KEEP_STAGED),
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

    def identities(self) -> list[Any]:
        """The age identities for restores and drills (none when no key is set)."""
        return self.age_identity.load() if self.age_identity else []

    def require_urls(self) -> tuple[str, ...]:
        if not self.urls:
            raise ConfigError("no destination given: pass --to URL or set KOTOMI_BACKUP_URL")
        return self.urls


def _seconds_or_none(env: Mapping[str, str], name: str) -> float | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} {text!r}: give a positive number of seconds (or leave it unset)")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r}: give a whole number") from None
