"""What only the GCS store does, against a real GCS JSON API over HTTP (gcp-storage-emulator,
on loopback): resumable chunks and their CRC32C and MD5, a refused upload that sends nothing.
What every store does is in test_contract.py."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import google_crc32c
import pytest

from kotomi_backup_dagster.engine.errors import BackupError
from kotomi_backup_dagster.engine.stores.gcs import GCSStore, KiB
from tests.conftest import gcs_client
from tests.servers import Endpoint


def test_a_large_archive_goes_up_in_resumable_chunks_and_its_checksums_are_confirmed(
    gs_bucket: str, gcs_env: Endpoint, tmp_path: Path
) -> None:
    source = tmp_path / "big.db.zst"
    data = os.urandom(1024 * KiB + 777)
    source.write_bytes(data)
    store = GCSStore(gcs_client(), gs_bucket, "p", chunk_size=256 * KiB)
    stored = store.put_file("kotomi/x/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    assert stored.size == len(data)
    assert stored.requests == 1 + 5  # the session, five chunks of at most 256 KiB

    blob = gcs_client().bucket(gs_bucket).get_blob("p/kotomi/x/big.db.zst")
    assert blob.size == len(data)
    crc = google_crc32c.Checksum(data).digest()
    assert blob.crc32c == base64.b64encode(crc).decode()
    assert blob.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
    with store.open_read("kotomi/x/big.db.zst") as stream:
        assert stream.read() == data


def test_a_damaged_staged_archive_is_refused_before_anything_is_sent(
    gs_bucket: str, gcs_env: Endpoint, tmp_path: Path
) -> None:
    source = tmp_path / "a.db.zst"
    source.write_bytes(os.urandom(300 * KiB))
    store = GCSStore(gcs_client(), gs_bucket, "", chunk_size=256 * KiB)
    with pytest.raises(BackupError, match="damaged"):
        store.put_file("k/a.db.zst", source, sha256="0" * 64)
    assert store.sent == 0
    assert list(gcs_client().list_blobs(gs_bucket)) == []
