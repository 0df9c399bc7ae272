"""Backup destinations behind one interface; `open_store` picks the backend from a URL.

boto3 and google-cloud-storage are imported only when an s3:// or gs:// URL is opened:
importing them costs about a second each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse, urlunparse

from .. import config
from ..config import split_urls
from ..errors import ConfigError
from .base import (
    BackupStore,
    LockingStore,
    LockSettings,
    ObjectExists,
    ObjectLock,
    ObjectLocked,
    ObjectNotFound,
    ObjectState,
    StoredObject,
    UnreadableObject,
)
from .local import LocalStore
from .retry import RetryPolicy
from .timeouts import Timeouts, deadline

if TYPE_CHECKING:
    from .gcs import GCSStore
    from .s3 import S3Store

__all__ = [
    "BackupStore",
    "LocalStore",
    "LockSettings",
    "LockingStore",
    "ObjectExists",
    "ObjectLock",
    "ObjectLocked",
    "ObjectNotFound",
    "ObjectState",
    "RetryPolicy",
    "StoreOptions",
    "StoredObject",
    "Timeouts",
    "UnreadableObject",
    "deadline",
    "open_store",
    "safe_url",
    "split_urls",
    "url_scheme",
]

REMOTE_SCHEMES = ("s3", "gs")


def safe_url(url: str) -> str:
    """The URL without user info, query or fragment: safe for messages and metadata."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urlunparse((parsed.scheme, host, parsed.path, "", "", ""))


def url_scheme(url: str) -> str:
    """'s3', 'gs', 'file', or '' for a plain path (Windows drive letters included)."""
    scheme = urlparse(url).scheme.lower()
    if len(scheme) == 1 and url[1:3] in (":\\", ":/"):
        return ""
    return scheme


@dataclass(frozen=True)
class StoreOptions:
    """Settings for remote stores, from the environment (or the Dagster resource)."""

    s3_sse: str | None = None  # KOTOMI_BACKUP_S3_SSE
    s3_kms_key_id: str | None = None  # KOTOMI_BACKUP_S3_KMS_KEY_ID (an id, not a secret)
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # KOTOMI_BACKUP_RETRIES
    timeouts: Timeouts = field(default_factory=Timeouts)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreOptions:
        return cls(
            s3_sse=config.S3_SSE.read(environ),
            s3_kms_key_id=config.S3_KMS_KEY_ID.read(environ),
            retry=RetryPolicy.from_env(environ),
        )


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            f"destination {safe_url(url)}: credentials do not belong in the URL; use the "
            "provider's credential chain (environment, profile, service account)"
        )
    bucket = parsed.hostname or ""
    if not bucket:
        raise ConfigError(
            f"destination {safe_url(url)!r} has no bucket: use {parsed.scheme}://bucket/prefix"
        )
    return parsed.netloc, parsed.path.strip("/")


def open_store(
    url: str,
    *,
    client: Any = None,
    options: StoreOptions | None = None,
    environ: Mapping[str, str] | None = None,
) -> BackupStore:
    """The store for `url`. For s3:// and gs://, `client` is a boto3 S3 client or a
    `google.cloud.storage.Client` (Dagster passes its resources' clients); without one, a
    client is built from the provider's standard credential chain and the environment
    (`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`)."""
    parsed = urlparse(url)
    scheme = url_scheme(url)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ConfigError(f"bad destination {safe_url(url)!r}: use file:///absolute/dir")
        return LocalStore(Path(unquote(parsed.path)))  # file:///a%20b is the folder "a b"
    if scheme == "":
        return LocalStore(Path(url).expanduser())
    if scheme in REMOTE_SCHEMES:
        opts = options or StoreOptions.from_env(environ)
        bucket, prefix = _bucket_and_prefix(url)
        if scheme == "s3":
            return _s3_store(bucket, prefix, client, opts)
        return _gcs_store(bucket, prefix, client, opts, url)
    raise ConfigError(
        f"unknown destination scheme {scheme!r} in {safe_url(url)!r}: use a directory, "
        "file:///dir, "
        "s3://bucket/prefix or gs://bucket/prefix"
    )


def _s3_store(bucket: str, prefix: str, client: Any, opts: StoreOptions) -> S3Store:
    from .s3 import S3Store

    if client is None:
        client = default_s3_client()
    return S3Store(
        client,
        bucket,
        prefix,
        sse=opts.s3_sse,
        kms_key_id=opts.s3_kms_key_id,
        retry=opts.retry,
        timeouts=opts.timeouts,
    )


def default_s3_client() -> Any:
    """boto3's standard chain: env credentials, profile, SSO, instance role; AWS_REGION and
    AWS_ENDPOINT_URL(_S3) for S3-compatible services. botocore's own retries are off: the
    store retries (one layer, predictable attempts and waiting). The store sets each
    request's read timeout itself (timeouts.py); this one is for anything else."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=Timeouts().connect,
        read_timeout=Timeouts().read,
    )
    return boto3.session.Session().client("s3", config=config)


def _gcs_store(bucket: str, prefix: str, client: Any, opts: StoreOptions, url: str) -> GCSStore:
    from .gcs import GCSStore

    if client is None:
        client = default_gcs_client(url)
    return GCSStore(client, bucket, prefix, retry=opts.retry, timeouts=opts.timeouts)


def default_gcs_client(url: str) -> Any:
    """Application Default Credentials; with STORAGE_EMULATOR_HOST set, the emulator and
    anonymous credentials (google-cloud-storage's own rule)."""
    import google.auth.exceptions
    from google.cloud import storage  # type: ignore[import-untyped,unused-ignore]

    try:
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigError(
            f"destination {safe_url(url)}: no Google credentials found; set "
            "GOOGLE_APPLICATION_CREDENTIALS or run with a service account"
        ) from exc
