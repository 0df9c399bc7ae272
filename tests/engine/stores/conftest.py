"""Helpers for the store tests: a backup's settings, reading an object back, and `remote`, one
destination of each kind behind a fault proxy. The S3 and GCS servers themselves and their
buckets are fixtures of tests/conftest.py (the Dagster tests use them too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Proxies
from tests.servers import FaultProxy, Request


def settings(db: Path, *urls: str, **extra: Any) -> Any:
    from kotomi_backup_dagster.engine.settings import BackupSettings

    return BackupSettings.from_env(db_path=db, urls=urls, **extra)


def download(store: Any, key: str) -> bytes:
    with store.open_read(key) as stream:
        data: bytes = stream.read()
    return data


def check_download(store: Any, manifest: Any) -> bytes:
    """The archive read back through `open_read` is the manifest's, and decompresses to the
    manifest's database."""
    import hashlib

    import zstandard

    archive = download(store, manifest.archive.key)
    assert len(archive) == manifest.archive.size
    assert hashlib.sha256(archive).hexdigest() == manifest.archive.sha256
    db = zstandard.ZstdDecompressor().stream_reader(archive).read()
    assert hashlib.sha256(db).hexdigest() == manifest.db_sha256
    return archive


def route(proxy: FaultProxy, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send the standard clients of `open_store` through the proxy."""
    if scheme == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)


@pytest.fixture(params=["s3", "gs"])
def remote(
    request: pytest.FixtureRequest, proxy_for: Proxies, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, FaultProxy]:
    """A destination URL of each kind, reached through a fault proxy that sees every request."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        proxy = proxy_for(request.getfixturevalue("aws_env"))
    else:
        bucket = request.getfixturevalue("gs_bucket")
        proxy = proxy_for(request.getfixturevalue("gcs_env"))
    route(proxy, request.param, monkeypatch)
    return f"{request.param}://{bucket}/offsite", proxy


def is_upload(request: Request) -> bool:
    """Writes of data: S3 PutObject/UploadPart, GCS uploads (multipart or resumable)."""
    return request.method in ("PUT", "POST") and (
        "/upload/" in request.path or request.method == "PUT"
    )
