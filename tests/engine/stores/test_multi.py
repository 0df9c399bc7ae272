"""One backup, several destinations at once: S3 + GCS, S3 + a local directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kotomi_backup_dagster.engine.backup import (
    run_backup,
    stage_archive,
    stage_snapshot,
    stage_upload,
    stage_verify,
)
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import open_store
from tests.engine.stores.conftest import check_download, settings
from tests.servers import Endpoint


def test_one_backup_lands_on_s3_and_gcs_with_identical_bytes(
    kotomi_db: Path, s3_bucket: str, gs_bucket: str, aws_env: Endpoint, gcs_env: Endpoint
) -> None:
    urls = (f"s3://{s3_bucket}/kotomi-prod", f"gs://{gs_bucket}/kotomi-prod")
    result = run_backup(settings(kotomi_db, *urls))
    assert [o.url for o in result.outcomes] == list(urls)
    assert all(o.ok for o in result.outcomes)
    assert [o.requests for o in result.outcomes] == [3, 2]
    downloads = []
    for url, outcome in zip(urls, result.outcomes, strict=True):
        store = open_store(url)
        [manifest] = list_backups(store, "kotomi").backups
        # The same backup, each manifest with the version its own store gave the archive.
        assert manifest == outcome.manifest
        assert replace(manifest, versions={}) == replace(result.manifest, versions={})
        version = store.inventory("kotomi")[manifest.archive.key].version
        assert manifest.versions == ({manifest.archive.key: version} if version else {})
        downloads.append(check_download(store, manifest))
    assert downloads[0] == downloads[1]


def test_one_backup_lands_on_s3_and_a_local_directory_with_identical_bytes(
    kotomi_db: Path, s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    local = tmp_path / "local-backups"
    urls = (f"s3://{s3_bucket}", str(local))
    manifest = run_backup(settings(kotomi_db, *urls)).manifest
    s3 = open_store(urls[0])
    assert [m.backup_id for m in list_backups(s3, "kotomi").backups] == [manifest.backup_id]
    assert [m.backup_id for m in list_backups(open_store(urls[1]), "kotomi").backups] == [
        manifest.backup_id
    ]
    assert check_download(s3, manifest) == (local / manifest.archive.key).read_bytes()


def test_a_second_upload_fills_in_only_the_missing_destination(
    kotomi_db: Path, s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    config = settings(kotomi_db, f"s3://{s3_bucket}/p", str(local))
    staged, _ = stage_snapshot(config)
    stage_verify(staged, config)
    manifest, _ = stage_archive(staged, config)
    s3 = open_store(f"s3://{s3_bucket}/p")
    [first] = stage_upload(staged, [s3], cleanup=False)  # as if the local store had failed
    assert first.ok and first.requests == 3

    second = stage_upload(staged, [s3, open_store(str(local))])
    assert second[0].already_there and second[0].requests == 1
    assert second[1].ok and not second[1].already_there
    assert not staged.workdir.exists()  # every store has it now
    assert [m.backup_id for m in list_backups(s3, "kotomi").backups] == [manifest.backup_id]
