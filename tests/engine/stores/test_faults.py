"""S3 and GCS through a TCP proxy that drops, delays, loses and fails requests.

The proxy sits between the store's real HTTP client and the real server, so every request
the tests count is one the server would have billed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.engine.backup import (
    run_backup,
    stage_archive,
    stage_snapshot,
    stage_upload,
    stage_verify,
)
from kotomi_backup_dagster.engine.errors import BackupError
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import RetryPolicy, open_store
from kotomi_backup_dagster.engine.stores.gcs import GCSStore, KiB
from kotomi_backup_dagster.engine.stores.s3 import MiB, S3Store
from tests.conftest import AWS_SECRET, Proxies, gcs_client, s3_client
from tests.engine.stores.conftest import check_download, is_upload, settings
from tests.servers import Endpoint, FaultProxy, Request, Rule

FAST = RetryPolicy(attempts=6, base_delay=0.05)


def test_a_backup_costs_a_small_fixed_number_of_requests(
    kotomi_db: Path, remote: tuple[str, FaultProxy]
) -> None:
    url, proxy = remote
    counts = []
    for _ in range(3):  # the count does not grow with the number of backups stored
        proxy.clear()
        [outcome] = run_backup(settings(kotomi_db, url)).outcomes
        seen = [(r.method, r.path.rsplit("/", 1)[-1]) for r in proxy.requests()]
        counts.append(len(seen))
        # preflight + the manifest check + what the store reports for the upload
        assert len(seen) == 2 + outcome.requests
    if url.startswith("s3"):
        assert seen == [
            ("HEAD", url.split("/")[2]),  # HeadBucket
            ("GET", "manifest.json"),  # not there yet
            ("PUT", "kotomi.db.zst"),
            ("HEAD", "kotomi.db.zst"),  # size and checksum confirmed
            ("PUT", "manifest.json"),
        ]
    else:
        assert [m for m, _ in seen] == ["GET", "GET", "POST", "POST"]
        assert seen[0][1] == "testPermissions"
    assert counts == [counts[0]] * 3  # no listing: the same cost with 0, 1 or 2 backups there


def test_the_backup_lands_through_a_flaky_network(
    kotomi_db: Path, remote: tuple[str, FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    url, proxy = remote
    caplog.set_level("WARNING", logger="kotomi_backup_dagster.stores")
    proxy.rules.extend(
        [  # one of each for sure, then at random
            Rule(lambda r: True, "error", times=1),
            Rule(lambda r: True, "drop", times=1),
            Rule(lambda r: True, "delay", times=1),
            Rule(is_upload, "lose", times=1),
        ]
    )
    proxy.error_rate, proxy.drop_rate, proxy.delay_rate = 0.2, 0.1, 0.1
    made = [run_backup(settings(kotomi_db, url)).manifest for _ in range(2)]
    assert proxy.faults("error") and proxy.faults("drop") and proxy.faults("lose")
    retried = [r.getMessage() for r in caplog.records if "transient error" in r.getMessage()]
    assert retried and all(m.startswith(url) for m in retried)
    assert AWS_SECRET not in caplog.text and "upload_id" not in caplog.text

    store = open_store(url)
    listed = list_backups(store, "kotomi").backups
    assert [m.backup_id for m in listed] == sorted((m.backup_id for m in made), reverse=True)
    proxy.rules.append(
        Rule(lambda r: r.method == "GET" and "kotomi.db" in r.target, "truncate", times=2)
    )
    for manifest in listed:
        check_download(store, manifest)  # downloads break midway and resume
    assert proxy.faults("truncate")


def test_an_upload_cut_for_good_lists_nothing_and_keeps_the_staged_archive(
    kotomi_db: Path, remote: tuple[str, FaultProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, proxy = remote
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "2")
    config = settings(kotomi_db, url)
    staged, _ = stage_snapshot(config)
    stage_verify(staged, config)
    manifest, _ = stage_archive(staged, config)
    proxy.rules.append(Rule(is_upload, "drop"))

    [outcome] = stage_upload(staged, [open_store(url)])
    assert not outcome.ok
    assert outcome.error and "\n" not in outcome.error and url in outcome.error
    assert "after 3 attempts" in outcome.error and AWS_SECRET not in outcome.error
    assert len([r for r in proxy.requests() if is_upload(r)]) == 3
    listing = list_backups(open_store(url), "kotomi")
    assert listing.backups == [] and listing.incomplete == []
    assert staged.archive_path(manifest.encrypted).exists(), "the staged archive is gone"

    proxy.clear()  # the network is back: the same staged files go up
    [again] = stage_upload(staged, [open_store(url)])
    assert again.ok and not again.already_there
    [landed] = list_backups(open_store(url), "kotomi").backups
    assert landed.backup_id == manifest.backup_id
    check_download(open_store(url), landed)


def big_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "big.db.zst"
    path.write_bytes(data)
    return path, data


def part(number: int) -> Callable[[Request], bool]:
    return lambda r: r.method == "PUT" and f"partNumber={number}&" in r.query + "&"


def test_multipart_survives_failed_parts_and_a_lost_completion(
    s3_bucket: str, aws_env: Endpoint, proxy_for: Proxies, tmp_path: Path
) -> None:
    proxy = proxy_for(aws_env)
    source, data = big_file(tmp_path, 11 * MiB)
    completion = lambda r: r.method == "POST" and "uploadId=" in r.query  # noqa: E731
    proxy.rules.extend(
        [
            Rule(part(2), "error", times=1),
            Rule(part(3), "drop", times=1),
            # S3 completes the upload, the answer is lost; the retry finds no such upload
            # any more, and the HeadObject that follows decides.
            Rule(completion, "lose", times=1),
        ]
    )
    store = S3Store(s3_client(proxy.url), s3_bucket, "p", part_size=5 * MiB, retry=FAST)
    stored = store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    assert stored.requests == 1 + 3 + 1 + 1 + 3  # plus one retry per fault
    assert len(proxy.faults()) == 3
    with open_store(f"s3://{s3_bucket}/p").open_read("k/big.db.zst") as stream:
        assert stream.read() == data


def test_multipart_cut_for_good_leaves_no_object_and_no_unfinished_upload(
    s3_bucket: str, aws_env: Endpoint, proxy_for: Proxies, tmp_path: Path
) -> None:
    proxy = proxy_for(aws_env)
    source, data = big_file(tmp_path, 11 * MiB)
    proxy.rules.append(Rule(part(2), "drop"))
    store = S3Store(s3_client(proxy.url), s3_bucket, "p", part_size=5 * MiB, retry=FAST)
    with pytest.raises(BackupError, match=r"part 2 .*after 6 attempts"):
        store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    client = s3_client(aws_env.url)
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket)
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def chunk(start: int) -> Callable[[Request], bool]:
    return lambda r: (
        r.method == "PUT" and r.headers.get("content-range", "").startswith(f"bytes {start}-")
    )


def test_a_resumable_upload_resumes_where_the_session_stopped(
    gs_bucket: str, gcs_env: Endpoint, proxy_for: Proxies, tmp_path: Path
) -> None:
    proxy = proxy_for(gcs_env)
    source, data = big_file(tmp_path, 1024 * KiB + 99)
    size = 256 * KiB
    proxy.rules.extend(
        [
            # Nothing stored yet. The emulator then answers the status query with
            # "bytes=0-0" (real GCS sends no Range), the resumed chunk is refused, and the
            # store starts one new session: that path is exercised too.
            Rule(chunk(0), "error", times=1),
            Rule(chunk(size), "drop", times=1),
            Rule(chunk(2 * size), "lose", times=1),  # stored, but the answer is lost
            Rule(chunk(4 * size), "error", times=1),  # the last chunk
        ]
    )
    client = gcs_client_at(proxy.url)
    store = GCSStore(client, gs_bucket, "p", chunk_size=size, retry=FAST)
    stored = store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    assert stored.size == len(data)
    assert len(proxy.faults()) == 4
    statuses = [
        r for r in proxy.requests() if r.headers.get("content-range", "").startswith("bytes */")
    ]
    assert statuses, "the session was never asked how far it got"
    # one session + five chunks when nothing fails; every fault costs a few more requests
    assert 6 < stored.requests <= 6 + 3 * 4
    with open_store(f"gs://{gs_bucket}/p").open_read("k/big.db.zst") as stream:
        assert stream.read() == data


def gcs_client_at(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


def test_a_resumable_upload_cut_for_good_leaves_no_object(
    gs_bucket: str, gcs_env: Endpoint, proxy_for: Proxies, tmp_path: Path
) -> None:
    proxy = proxy_for(gcs_env)
    source, data = big_file(tmp_path, 600 * KiB)
    proxy.rules.append(Rule(chunk(256 * KiB), "drop"))
    store = GCSStore(gcs_client_at(proxy.url), gs_bucket, "p", chunk_size=256 * KiB, retry=FAST)
    with pytest.raises(BackupError, match="after 6 attempts"):
        store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    assert list(gcs_client().list_blobs(gs_bucket)) == []
