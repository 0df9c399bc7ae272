"""Fixtures for the S3 and GCS stores: servers started here, on loopback, once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Endpoint, FaultProxy, Request, gcs_emulator, moto_server

# Distinctive, so a test can prove it never shows up in a message.
AWS_SECRET = "kotomi-test-secret-WJALRXUTNFEMI"
AWS_KEY_ID = "AKIAKOTOMITESTKEY01"


@pytest.fixture(scope="session")
def moto() -> Iterator[Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Endpoint]:
    with gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto: Endpoint, tmp_path: Path) -> Endpoint:
    """boto3's standard chain sees test credentials and the moto endpoint, nothing else."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    return moto


@pytest.fixture
def gcs_env(monkeypatch: pytest.MonkeyPatch, gcs_server: Endpoint) -> Endpoint:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return gcs_server


def unique_bucket() -> str:
    return f"kotomi-{uuid.uuid4().hex[:12]}"


def s3_client(endpoint_url: str) -> Any:
    """A boto3 client for setting up and inspecting, with botocore retries off."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1})
    )


@pytest.fixture
def s3_bucket(aws_env: Endpoint) -> str:
    name = unique_bucket()
    s3_client(aws_env.url).create_bucket(Bucket=name)
    return name


def gcs_client() -> Any:
    from google.cloud import storage

    return storage.Client()


@pytest.fixture
def gs_bucket(gcs_env: Endpoint) -> str:
    name = unique_bucket()
    gcs_client().create_bucket(name)
    return name


@pytest.fixture
def proxy_for() -> Iterator[Any]:
    """`proxy_for(endpoint)`: a fault proxy in front of a server, closed after the test."""
    made: list[FaultProxy] = []

    def make(endpoint: Endpoint, **knobs: Any) -> FaultProxy:
        proxy = FaultProxy(endpoint.port, **knobs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


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


Proxies = Callable[..., FaultProxy]


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
