"""The GCS store against a real GCS JSON API over HTTP (gcp-storage-emulator, on loopback)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import google_crc32c
import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.catalog import list_backups
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.stores import ObjectNotFound, open_store
from kotomi_backup_dagster.engine.stores.gcs import GCSStore, KiB
from tests.conftest import gcs_client
from tests.engine.stores.conftest import check_download, settings
from tests.servers import Endpoint


def test_backup_lands_in_the_agreed_layout_and_reads_back(
    kotomi_db: Path, gs_bucket: str, gcs_env: Endpoint
) -> None:
    url = f"gs://{gs_bucket}/site/backups"
    result = run_backup(settings(kotomi_db, url))
    manifest = result.manifest
    [outcome] = result.outcomes
    assert outcome.ok and outcome.url == url
    assert outcome.requests == 2  # the archive's upload, the manifest's upload

    names = sorted(b.name for b in gcs_client().list_blobs(gs_bucket))
    assert names == [
        f"site/backups/kotomi/{manifest.backup_id}/kotomi.db.zst",
        f"site/backups/kotomi/{manifest.backup_id}/manifest.json",
    ]
    store = open_store(url)
    listing = list_backups(store, "kotomi")
    assert [m.backup_id for m in listing.backups] == [manifest.backup_id]
    assert listing.incomplete == [] and listing.unreadable == []
    check_download(store, listing.backups[0])


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


def test_a_missing_bucket_fails_at_once_in_one_line(kotomi_db: Path, gcs_env: Endpoint) -> None:
    url = "gs://no-such-bucket-kotomi/backups"
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        run_backup(settings(kotomi_db, url))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and url in message and "does not exist" in message


def test_children_listing_and_directory_delete(gs_bucket: str, gcs_env: Endpoint) -> None:
    store = open_store(f"gs://{gs_bucket}/root")
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
    assert open_store(f"gs://{gs_bucket}").list_children("root") == ["kotomi", "other"]
