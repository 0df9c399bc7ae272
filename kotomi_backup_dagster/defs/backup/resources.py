"""The backup settings as a Dagster resource, read from the documented KOTOMI_* variables.

s3:// destinations use dagster-aws's `S3Resource` (its boto3 client; `endpoint_url` for
MinIO, R2, B2) and gs:// destinations dagster-gcp's `GCSResource` (when the extra `gcp` is
installed), as optional nested resources. `backup_resource_from_env` attaches them only
when `KOTOMI_BACKUP_URL` names such a destination, so the code location does not import
dagster_aws/dagster_gcp (about a second each) for a local-only setup. Without them,
`stores()` builds clients from the providers' standard credential chains, as the CLI does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from ...engine import stores as engine_stores
from ...engine.archive import AgeIdentity
from ...engine.errors import ConfigError
from ...engine.settings import BackupSettings
from ...engine.stores import BackupStore, StoreOptions, open_store, split_urls, url_scheme
from ..databases import DatabaseSpec


class _ClientResource(Protocol):
    def get_client(self) -> Any: ...


class KotomiBackupResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where one database is read from and where its backups go."""

    name: str = Field(
        default="kotomi",
        description="The default database's backup name (a database given to settings() "
        "brings its own): the folder on every store, the asset prefix.",
    )
    db_path: str | None = Field(
        default=None, description="The default database's live SQLite file (KOTOMI_DB_PATH)."
    )
    backup_url: str = Field(
        default="", description="Destination URL(s), comma-separated (KOTOMI_BACKUP_URL)."
    )
    age_recipients: str | None = Field(
        default=None, description="age public keys; set = every archive is encrypted."
    )
    age_identity: str | None = Field(
        default=None,
        description="The age identity for drills and restores of encrypted backups: a key "
        "file's path, or the key itself (KOTOMI_BACKUP_AGE_IDENTITY; a secret: give it by "
        "environment variable, never as a literal).",
    )
    timezone: str = Field(default="UTC", description="For schedules and retention buckets.")
    verify_mode: str = Field(default="quick", description="quick (quick_check) or full.")
    profile: str = Field(default="kotomi", description="kotomi (Kotomi-aware checks) or generic.")
    backup_format: str = Field(
        default="full",
        description="full (one archive per backup) or paged (only pages a destination lacks).",
    )
    staging_dir: str | None = Field(
        default=None, description="Local scratch space for snapshot and archive."
    )
    # Typed loosely so that importing this module does not import dagster_aws/dagster_gcp.
    s3: ConfigurableResource | None = Field(  # type: ignore[type-arg]
        default=None,
        description="dagster-aws S3Resource for s3:// destinations (endpoint_url for "
        "MinIO, R2, B2). Its max_attempts adds botocore retries under the store's own.",
    )
    gcs: ConfigurableResource | None = Field(  # type: ignore[type-arg]
        default=None, description="dagster-gcp GCSResource for gs:// destinations."
    )
    s3_sse: str | None = Field(
        default=None, description="S3 server-side encryption: AES256 or aws:kms."
    )
    s3_kms_key_id: str | None = Field(default=None, description="KMS key for aws:kms.")
    client_retries: int = Field(
        default=5,
        description="Retries of one store request after a transient error (exponential "
        "backoff with full jitter, from 0.5 s).",
    )
    deadline_seconds: float | None = Field(
        default=None,
        description="Seconds an upload may take before its store requests give up (each "
        "attempt of the upload step); unset: KOTOMI_BACKUP_DEADLINE, else none.",
    )

    def settings(self, database: DatabaseSpec | None = None) -> BackupSettings:
        """The engine's settings for one database (default: this resource's own `name`)."""
        db_path = database.db_path if database is not None and database.db_path else self.db_path
        overrides: dict[str, Any] = {
            "db_path": Path(db_path).expanduser() if db_path else None,
            "urls": tuple(u.strip() for u in self.backup_url.split(",") if u.strip()),
            "name": database.name if database is not None else self.name,
            "age_recipients": self.age_recipients or None,
            "timezone": self.timezone,
            "verify_mode": self.verify_mode,
            "profile": self.profile,
            "backup_format": self.backup_format,
        }
        if self.staging_dir:
            overrides["staging_dir"] = Path(self.staging_dir).expanduser()
        if self.age_identity:
            overrides["age_identity"] = AgeIdentity.from_setting(self.age_identity)
        if self.deadline_seconds:
            overrides["deadline"] = self.deadline_seconds
        return BackupSettings.from_env(**overrides)

    def store_options(self) -> StoreOptions:
        if not 0 <= self.client_retries <= 20:
            raise ConfigError(f"client_retries {self.client_retries}: use 0 to 20")
        return StoreOptions(
            s3_sse=self.s3_sse or None,
            s3_kms_key_id=self.s3_kms_key_id or None,
            retry=engine_stores.RetryPolicy(attempts=self.client_retries + 1),
        )

    def _client_for(self, url: str) -> Any:
        """A fresh client from the matching nested resource, or None (standard chain)."""
        nested: Any = {"s3": self.s3, "gs": self.gcs}.get(url_scheme(url))
        if nested is None:
            return None
        if not callable(getattr(nested, "get_client", None)):
            raise ConfigError(
                f"the {url_scheme(url)} resource {type(nested).__name__} has no get_client()"
            )
        resource: _ClientResource = nested
        return resource.get_client()

    def store(self, url: str) -> BackupStore:
        """One destination, through the configured client (endpoint, credentials)."""
        return open_store(url, client=self._client_for(url), options=self.store_options())

    def stores(self) -> list[BackupStore]:
        return [self.store(url) for url in self.settings().require_urls()]

    def urls(self) -> list[str]:
        return split_urls(self.backup_url)


def _env_or(name: str, default: Any) -> Any:
    """EnvVar when the variable is set (the UI shows the name, never the value), else default."""
    return EnvVar(name) if os.environ.get(name) else default


def _s3_resource_from_env() -> ConfigurableResource:  # type: ignore[type-arg]
    from dagster_aws.s3 import S3Resource

    endpoint = next(
        (EnvVar(n) for n in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if os.environ.get(n)),
        None,
    )
    # Credentials stay in boto3's standard chain: never a resource field, never in the UI.
    # max_attempts=0: botocore does not retry; the store does (one retry layer).
    return S3Resource(
        endpoint_url=endpoint,
        region_name=_env_or("AWS_REGION", None),
        profile_name=_env_or("AWS_PROFILE", None),
        max_attempts=0,
    )


def _gcs_resource_from_env() -> ConfigurableResource | None:  # type: ignore[type-arg]
    try:
        from dagster_gcp.gcs import GCSResource
    except ImportError:
        # dagster-gcp is the extra `gcp` (the image leaves out its BigQuery stack): the store
        # then builds its client from Google's standard credential chain, as the CLI does.
        return None
    return GCSResource(project=_env_or("GOOGLE_CLOUD_PROJECT", None))


def backup_resource_from_env(spec: DatabaseSpec | None = None) -> KotomiBackupResource:
    """The settings every database shares, by environment variable name (the UI shows the
    names, never the values); `spec`, when given, is the default database."""
    schemes = {url_scheme(u) for u in split_urls(os.environ.get("KOTOMI_BACKUP_URL"))}
    name = spec.name if spec is not None else os.environ.get("KOTOMI_BACKUP_NAME") or "kotomi"
    db_path = spec.db_path if spec is not None and spec.db_path else None
    return KotomiBackupResource(
        name=name,
        db_path=db_path or _env_or("KOTOMI_DB_PATH", None),
        backup_url=_env_or("KOTOMI_BACKUP_URL", ""),
        age_recipients=_env_or("KOTOMI_BACKUP_AGE_RECIPIENTS", None),
        age_identity=_env_or("KOTOMI_BACKUP_AGE_IDENTITY", None),
        timezone=_env_or("KOTOMI_BACKUP_TIMEZONE", "UTC"),
        verify_mode=_env_or("KOTOMI_BACKUP_VERIFY", "quick"),
        profile=_env_or("KOTOMI_BACKUP_PROFILE", "kotomi"),
        backup_format=_env_or("KOTOMI_BACKUP_FORMAT", "full"),
        staging_dir=_env_or("KOTOMI_BACKUP_STAGING_DIR", None),
        s3=_s3_resource_from_env() if "s3" in schemes else None,
        gcs=_gcs_resource_from_env() if "gs" in schemes else None,
        s3_sse=_env_or("KOTOMI_BACKUP_S3_SSE", None),
        s3_kms_key_id=_env_or("KOTOMI_BACKUP_S3_KMS_KEY_ID", None),
        client_retries=EnvVar.int("KOTOMI_BACKUP_RETRIES")
        if os.environ.get("KOTOMI_BACKUP_RETRIES")
        else 5,
    )
