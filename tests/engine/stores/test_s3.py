"""The S3 store against a real S3 endpoint over HTTP (moto's server, on loopback)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.catalog import list_backups
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.stores import ObjectNotFound, open_store
from kotomi_backup_dagster.engine.stores.s3 import MiB, S3Store
from tests.conftest import AWS_SECRET, s3_client
from tests.engine.stores.conftest import check_download, settings
from tests.servers import Endpoint


def test_backup_lands_in_the_agreed_layout_and_reads_back(
    kotomi_db: Path, s3_bucket: str, aws_env: Endpoint
) -> None:
    url = f"s3://{s3_bucket}/site/backups"
    result = run_backup(settings(kotomi_db, url))
    manifest = result.manifest
    [outcome] = result.outcomes
    assert outcome.ok and outcome.url == url
    assert outcome.requests == 3  # PutObject, HeadObject, the manifest's PutObject

    keys = sorted(
        o["Key"] for o in s3_client(aws_env.url).list_objects_v2(Bucket=s3_bucket)["Contents"]
    )
    assert keys == [
        f"site/backups/kotomi/{manifest.backup_id}/kotomi.db.zst",
        f"site/backups/kotomi/{manifest.backup_id}/manifest.json",
    ]
    store = open_store(url)
    listing = list_backups(store, "kotomi")
    assert [m.backup_id for m in listing.backups] == [manifest.backup_id]
    assert listing.incomplete == [] and listing.unreadable == []
    check_download(store, listing.backups[0])


def test_a_large_archive_goes_up_in_bounded_parts_and_its_checksum_is_confirmed(
    s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    source = tmp_path / "big.db.zst"
    data = os.urandom(12 * MiB + 12345)
    source.write_bytes(data)
    store = S3Store(s3_client(aws_env.url), s3_bucket, "p", part_size=5 * MiB)
    stored = store.put_file("kotomi/x/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    assert stored.size == len(data)
    assert stored.requests == 1 + 3 + 1 + 1  # create, 3 parts, complete, HeadObject

    head = s3_client(aws_env.url).head_object(
        Bucket=s3_bucket, Key="p/kotomi/x/big.db.zst", ChecksumMode="ENABLED"
    )
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert head["ChecksumSHA256"].split("-")[0] == base64.b64encode(composite).decode()
    with store.open_read("kotomi/x/big.db.zst") as stream:
        assert stream.read() == data


def test_a_damaged_staged_archive_is_refused_and_leaves_nothing_behind(
    s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    source = tmp_path / "big.db.zst"
    source.write_bytes(os.urandom(6 * MiB))
    client = s3_client(aws_env.url)
    store = S3Store(client, s3_bucket, "", part_size=5 * MiB)
    with pytest.raises(BackupError, match="damaged"):
        store.put_file("k/big.db.zst", source, sha256="0" * 64)
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket)
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_server_side_encryption_is_requested_when_configured(
    kotomi_db: Path, s3_bucket: str, aws_env: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_S3_SSE", "aws:kms")
    monkeypatch.setenv("KOTOMI_BACKUP_S3_KMS_KEY_ID", "alias/kotomi-backups")
    manifest = run_backup(settings(kotomi_db, f"s3://{s3_bucket}")).manifest
    head = s3_client(aws_env.url).head_object(Bucket=s3_bucket, Key=manifest.archive.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/kotomi-backups"

    monkeypatch.setenv("KOTOMI_BACKUP_S3_SSE", "rot13")
    with pytest.raises(ConfigError, match="KOTOMI_BACKUP_S3_SSE"):
        open_store(f"s3://{s3_bucket}")


def test_a_missing_bucket_fails_at_once_in_one_line_without_credentials(
    kotomi_db: Path, aws_env: Endpoint, tmp_path: Path
) -> None:
    url = "s3://no-such-bucket-kotomi/backups"
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        run_backup(settings(kotomi_db, url))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and "does not exist" in message
    assert AWS_SECRET not in message

    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cli = [sys.executable, "-m", "kotomi_backup_dagster.cli"]
    proc = subprocess.run(
        [*cli, "backup", "--db", str(kotomi_db), "--to", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "does not exist" in lines[0], proc.stderr
    assert AWS_SECRET not in proc.stderr + proc.stdout


def test_credentials_in_the_url_are_refused_without_echoing_them(aws_env: Endpoint) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("s3://AKIAXX:hunter2@bucket/prefix")
    assert "hunter2" not in str(caught.value) and "s3://bucket/prefix" in str(caught.value)


def test_children_listing_and_directory_delete(s3_bucket: str, aws_env: Endpoint) -> None:
    store = open_store(f"s3://{s3_bucket}/root")
    for key in ("kotomi/a/manifest.json", "kotomi/a/drills/1.json", "kotomi/b/x", "other/c"):
        store.put_bytes(key, b"{}")
    assert store.list_children("kotomi") == ["a", "b"]
    assert store.list_children("kotomi/a") == ["drills", "manifest.json"]
    assert store.list_children("nothing") == []
    assert store.get_bytes("kotomi/b/x") == b"{}"
    with pytest.raises(ObjectNotFound):
        store.get_bytes("kotomi/b/missing")
    with pytest.raises(ObjectNotFound):
        store.open_read("kotomi/b/missing")
    store.delete("kotomi/a")
    assert store.list_children("kotomi") == ["b"]
    assert open_store(f"s3://{s3_bucket}").list_children("root") == ["kotomi", "other"]


def test_a_prefix_of_a_prefix_is_not_deleted(s3_bucket: str, aws_env: Endpoint) -> None:
    store: Any = open_store(f"s3://{s3_bucket}")
    store.put_bytes("kotomi/20260101T000000Z-aaaaaa/manifest.json", b"1")
    store.put_bytes("kotomi/20260101T000000Z-aaaaaa-other/manifest.json", b"2")
    store.delete("kotomi/20260101T000000Z-aaaaaa")
    assert store.list_children("kotomi") == ["20260101T000000Z-aaaaaa-other"]
