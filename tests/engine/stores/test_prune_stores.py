"""Pruning S3 and GCS destinations: exactly the planned set stays, nothing of the rest."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy, plan_retention
from kotomi_backup_dagster.engine.stores import open_store
from tests.engine.stores.conftest import backups_at

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
    times = [NOW - timedelta(hours=20 * i) for i in range(40)]
    made = backups_at(kotomi_db, url, tmp_path, times)
    ids = {moment: m.backup_id for moment, m in zip(times, made, strict=True)}
    store = open_store(url)
    policy = RetentionPolicy(keep_daily=5, keep_weekly=2)
    expected = {ids[d.time] for d in plan_retention(times, policy, now=NOW) if d.keep}
    result = prune_store(store, "kotomi", policy, now=NOW)
    assert {m.backup_id for m in list_backups(store, "kotomi").backups} == expected
    assert set(store.list_children("kotomi")) == expected, "removed backups left objects"
    assert len(result.removed) == len(times) - len(expected)
