"""The backup settings as a Dagster resource, from the KOTOMI_* variables (engine/config.py).

s3:// destinations use dagster-aws's `S3Resource` (its boto3 client; `endpoint_url` for
MinIO, R2, B2) and gs:// destinations dagster-gcp's `GCSResource` (when the extra `gcp` is
installed), as optional nested resources. `backup_resource_from_env` attaches them only
when `KOTOMI_BACKUP_URL` names such a destination, so the code location does not import
dagster_aws/dagster_gcp (about a second each) for a local-only setup. Without them,
`stores()` builds clients from the providers' standard credential chains, as the CLI does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from dagster import ConfigurableResource
from pydantic import Field

from ...engine import config
from ...engine import stores as engine_stores
from ...engine.archive import AgeIdentity
from ...engine.errors import ConfigError
from ...engine.settings import BackupSettings
from ...engine.stores import BackupStore, StoreOptions, open_store, split_urls, url_scheme
from ..databases import DatabaseSpec
from ..envvars import env_fields, env_var_if_set, setting_field


class _ClientResource(Protocol):
    def get_client(self) -> Any: ...


class KotomiBackupResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where one database is read from and where its backups go."""

    name: str | None = Field(
        default=config.NAME.default,
        description="The default database's backup name (a database given to settings() "
        "brings its own): the folder on every store, the asset prefix. Unset with several "
        "databases: each run names its own (the restore's `database`).",
    )
    db_path: str | None = setting_field(config.DB_PATH, note=", of the default database")
    backup_url: str = setting_field(config.URL, default="")
    age_recipients: str | None = setting_field(config.AGE_RECIPIENTS)
    age_identity: str | None = setting_field(
        config.AGE_IDENTITY, note="; a secret: give it by environment variable, never literally"
    )
    timezone: str = setting_field(config.TIMEZONE)
    verify_mode: str = setting_field(config.VERIFY)
    profile: str = setting_field(config.PROFILE)
    backup_format: str = setting_field(config.FORMAT)
    staging_dir: str | None = setting_field(config.STAGING_DIR)
    # Seconds as text: Dagster reads a variable into a str or an int field only.
    snapshot_timeout: str | None = setting_field(
        config.SNAPSHOT_TIMEOUT, default=None, note="; unset: the variable at run time, else 300"
    )
    keep_staged: int | None = setting_field(
        config.KEEP_STAGED, default=None, note="; unset: the variable at run time, else 3"
    )
    priority: str | None = setting_field(
        config.PRIORITY, default=None, note="; unset: the variable at run time, else low"
    )
    read_mbps: str | None = setting_field(
        config.READ_MBPS, default=None, note="; unset: the variable at run time, else none"
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
    s3_sse: str | None = setting_field(config.S3_SSE)
    s3_kms_key_id: str | None = setting_field(config.S3_KMS_KEY_ID)
    client_retries: int = setting_field(config.RETRIES)
    deadline_seconds: float | None = setting_field(
        config.DEADLINE, note="; each attempt of the upload step; unset: the variable at run time"
    )

    def settings(self, database: DatabaseSpec | None = None) -> BackupSettings:
        """The engine's settings for one database (default: this resource's own `name`); a
        field left unset is the variable's value in the run's environment."""
        db_path = database.db_path if database is not None and database.db_path else self.db_path
        timeout = self.snapshot_timeout
        return BackupSettings.from_env(
            db_path=Path(db_path).expanduser() if db_path else None,
            urls=config.URL.check(self.backup_url),
            name=database.name if database is not None else self.name,
            age_recipients=self.age_recipients or None,
            age_identity=AgeIdentity.from_setting(self.age_identity) if self.age_identity else None,
            timezone=self.timezone,
            verify_mode=self.verify_mode,
            profile=self.profile,
            backup_format=self.backup_format,
            staging_dir=Path(self.staging_dir).expanduser() if self.staging_dir else None,
            snapshot_timeout=config.SNAPSHOT_TIMEOUT.check(timeout) if timeout else None,
            keep_staged=self.keep_staged,
            deadline=self.deadline_seconds or None,
            priority=self.priority or None,
            read_mbps=config.READ_MBPS.check(self.read_mbps) if self.read_mbps else None,
        )

    def store_options(self) -> StoreOptions:
        return StoreOptions(
            s3_sse=config.S3_SSE.check(self.s3_sse),
            s3_kms_key_id=self.s3_kms_key_id or None,
            retry=engine_stores.RetryPolicy(attempts=config.RETRIES.check(self.client_retries) + 1),
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


# Resource field -> its setting, for the variables set where the code location loads.
BACKUP_FIELDS: dict[str, config.Setting[Any]] = {
    "db_path": config.DB_PATH,
    "backup_url": config.URL,
    "age_recipients": config.AGE_RECIPIENTS,
    "age_identity": config.AGE_IDENTITY,
    "timezone": config.TIMEZONE,
    "verify_mode": config.VERIFY,
    "profile": config.PROFILE,
    "backup_format": config.FORMAT,
    "staging_dir": config.STAGING_DIR,
    "snapshot_timeout": config.SNAPSHOT_TIMEOUT,
    "keep_staged": config.KEEP_STAGED,
    "priority": config.PRIORITY,
    "read_mbps": config.READ_MBPS,
    "s3_sse": config.S3_SSE,
    "s3_kms_key_id": config.S3_KMS_KEY_ID,
    "client_retries": config.RETRIES,
}


def _s3_resource_from_env() -> ConfigurableResource:  # type: ignore[type-arg]
    from dagster_aws.s3 import S3Resource

    endpoint = env_var_if_set("AWS_ENDPOINT_URL_S3") or env_var_if_set("AWS_ENDPOINT_URL")
    # Credentials stay in boto3's standard chain: never a resource field, never in the UI.
    # max_attempts=0: botocore does not retry; the store does (one retry layer).
    return S3Resource(
        endpoint_url=endpoint,
        region_name=env_var_if_set("AWS_REGION"),
        profile_name=env_var_if_set("AWS_PROFILE"),
        max_attempts=0,
    )


def _gcs_resource_from_env() -> ConfigurableResource | None:  # type: ignore[type-arg]
    try:
        from dagster_gcp.gcs import GCSResource
    except ImportError:
        # dagster-gcp is the extra `gcp` (the image leaves out its BigQuery stack): the store
        # then builds its client from Google's standard credential chain, as the CLI does.
        return None
    return GCSResource(project=env_var_if_set("GOOGLE_CLOUD_PROJECT"))


def backup_resource_from_env(
    spec: DatabaseSpec | None = None, environ: Mapping[str, str] | None = None
) -> KotomiBackupResource:
    """The settings every database shares, by environment variable name (the UI shows the
    names, never the values); `spec`, when given, is the default database."""
    schemes = {url_scheme(u) for u in config.URL.read(environ)}
    fields = env_fields(BACKUP_FIELDS, environ)
    if spec is not None and spec.db_path:
        fields["db_path"] = spec.db_path
    several = len(config.DATABASES.read(environ)) > 1  # no default database to name
    return KotomiBackupResource(
        name=spec.name if spec is not None else None if several else config.NAME.read(environ),
        s3=_s3_resource_from_env() if "s3" in schemes else None,
        gcs=_gcs_resource_from_env() if "gs" in schemes else None,
        **fields,
    )
