"""Pruning S3 and GCS destinations: exactly the planned set stays, nothing of the rest."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.catalog import list_backups, manifest_key
from kotomi_backup_dagster.engine.manifest import rfc3339
from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy, plan_retention
from kotomi_backup_dagster.engine.stores import open_store
from tests.engine.stores.conftest import settings

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_pruned_cloud_destination_lists_exactly_the_planned_set(
    scheme: str,
    request: pytest.FixtureRequest,
    kotomi_db: Path,
    tmp_path: Path,
) -> None:
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gs_bucket")
    url = f"{scheme}://{bucket}/prod"
    seed = run_backup(settings(kotomi_db, str(tmp_path / "seed"))).manifest
    archive = tmp_path / "seed" / seed.archive.key
    store = open_store(url)
    times = [NOW - timedelta(hours=20 * i) for i in range(40)]
    ids = {}
    for n, moment in enumerate(times):
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
        data = json.loads(seed.to_json())
        data.update(backup_id=backup_id, created_at=rfc3339(moment))
        data["archive"]["key"] = f"kotomi/{backup_id}/kotomi.db.zst"
        store.put_file(data["archive"]["key"], archive, sha256=seed.archive.sha256)
        store.put_bytes(manifest_key("kotomi", backup_id), json.dumps(data).encode())
        ids[moment] = backup_id
    policy = RetentionPolicy(keep_daily=5, keep_weekly=2)
    expected = {ids[d.time] for d in plan_retention(times, policy, now=NOW) if d.keep}
    result = prune_store(store, "kotomi", policy, now=NOW)
    assert {m.backup_id for m in list_backups(store, "kotomi").backups} == expected
    assert set(store.list_children("kotomi")) == expected, "removed backups left objects"
    assert len(result.removed) == len(times) - len(expected)
