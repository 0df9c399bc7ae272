"""What only the S3 store does, against a real S3 endpoint over HTTP (moto's server, on
loopback): multipart parts and their composite checksum, aborting a refused multipart upload,
server-side encryption. What every store does is in test_contract.py."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.stores import open_store
from kotomi_backup_dagster.engine.stores.s3 import MiB, S3Store
from tests.conftest import s3_client
from tests.engine.stores.conftest import settings
from tests.servers import Endpoint


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
