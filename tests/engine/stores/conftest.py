"""Helpers for the store tests: `backend`, one destination of every kind (a local folder, S3,
GCS) with a way to see its objects from outside our code; `remote`, S3 and GCS behind a fault
proxy; a backup's settings and reading an object back. The S3 and GCS servers themselves and
their buckets are fixtures of tests/conftest.py (the Dagster tests use them too)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.engine.manifest import Manifest
from tests.conftest import Proxies, gcs_client, s3_client
from tests.servers import Endpoint, FaultProxy, Request


@dataclass(frozen=True)
class Backend:
    """One kind of destination: the URL of its root (a folder, or a bucket), and every object
    key under that root as the backend itself lists them, without our store in between."""

    scheme: str  # "file", "s3" or "gs"
    root: str
    list_keys: Callable[[], list[str]]
    server: Endpoint | None = None  # the S3 or GCS server (None for a local folder)

    def url(self, prefix: str) -> str:
        return f"{self.root}/{prefix}"


def _local_keys(root: Path) -> Callable[[], list[str]]:
    def keys() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    return keys


def _s3_keys(endpoint: Endpoint, bucket: str) -> Callable[[], list[str]]:
    def keys() -> list[str]:
        listed = s3_client(endpoint.url).list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(str(o["Key"]) for o in listed)

    return keys


def _gs_keys(bucket: str) -> Callable[[], list[str]]:
    def keys() -> list[str]:
        return sorted(str(b.name) for b in gcs_client().list_blobs(bucket))

    return keys


@pytest.fixture(params=["file", "s3", "gs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each kind of destination in turn, empty: a test using it is a contract every store keeps
    (run one kind with `-k file`, `-k s3` or `-k gs`)."""
    if request.param == "file":
        root = tmp_path / "bucket"
        root.mkdir()
        return Backend("file", f"file://{root}", _local_keys(root))
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("aws_env")
        return Backend("s3", f"s3://{bucket}", _s3_keys(endpoint, bucket), endpoint)
    bucket = request.getfixturevalue("gs_bucket")
    server = request.getfixturevalue("gcs_env")
    return Backend("gs", f"gs://{bucket}", _gs_keys(bucket), server)


def create_only_gcs(request: pytest.FixtureRequest) -> Backend:
    """A GCS destination on fake-gcs-server, which enforces ifGenerationMatch=0 (create-only)
    and keeps old generations readable, unlike gcp-storage-emulator (docs/test-servers.md)."""
    from tests.conftest import unique_bucket

    server = request.getfixturevalue("fake_gcs_env")
    bucket = unique_bucket()
    gcs_client().create_bucket(bucket)
    return Backend("gs", f"gs://{bucket}", _gs_keys(bucket), server)


def settings(db: Path, *urls: str, **extra: Any) -> Any:
    from kotomi_backup_dagster.engine.settings import BackupSettings

    return BackupSettings.from_env(db_path=db, urls=urls, **extra)


def backups_at(db: Path, url: str, tmp_path: Path, times: Sequence[datetime]) -> list[Manifest]:
    """A backup of `db` dated at each of `times` on `url`: one real backup made once, its
    archive stored again under each id with its manifest last (real objects, chosen times)."""
    from kotomi_backup_dagster.engine.backup import run_backup
    from kotomi_backup_dagster.engine.layout import manifest_key
    from kotomi_backup_dagster.engine.manifest import rfc3339
    from kotomi_backup_dagster.engine.stores import open_store

    seed = run_backup(settings(db, str(tmp_path / "seed"))).manifest
    archive = tmp_path / "seed" / seed.archive.key
    store = open_store(url)
    made = []
    for n, moment in enumerate(times):
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
        data = json.loads(seed.to_json())
        data.update(backup_id=backup_id, created_at=rfc3339(moment))
        data["archive"]["key"] = f"kotomi/{backup_id}/kotomi.db.zst"
        store.put_file(data["archive"]["key"], archive, sha256=seed.archive.sha256)
        store.put_bytes(manifest_key("kotomi", backup_id), json.dumps(data).encode())
        made.append(Manifest.from_json(json.dumps(data).encode()))
    return made


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
