"""Locked buckets on real S3 servers (LocalStack enforces nearly all of Object Lock, moto
part of it: docs/test-servers.md), and the writer's and the keeper's moves on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.keeper.guard import KeeperSettings
from kotomi_backup_dagster.engine.manifest import Manifest
from kotomi_backup_dagster.engine.prune import PruneResult, prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.stores import BackupStore, open_store
from tests.conftest import kotomi_requests, s3_client, unique_bucket
from tests.engine.stores.conftest import settings
from tests.servers import Endpoint

NAME = "kotomi"
KEEPER = KeeperSettings(role="keeper")
POLICY = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)
DEFAULT_RETENTION_DAYS = 2


@dataclass
class LockedBucket:
    """An S3 bucket with Object Lock on (so versioning too) and a default COMPLIANCE
    retention of two days: every object is locked from its first second."""

    server: Endpoint
    bucket: str
    db: Path
    made: int = 0

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/offsite"

    def client(self) -> Any:
        return s3_client(self.server.url)

    def store(self) -> BackupStore:
        return open_store(self.url)

    def key(self, key: str) -> str:
        return f"offsite/{key}"

    def backup(self, **extra: Any) -> Manifest:
        """The writer: one backup of the live database (a few requests of Kotomi first)."""
        self.made += 1
        kotomi_requests(self.db, 20, seed=1000 + self.made)
        return run_backup(settings(self.db, self.url, **extra)).manifest

    def prune(self, days_later: float = 3, **extra: Any) -> PruneResult:
        """The keeper: prune, as if `days_later` days had passed (the store's clock is the
        real one: every backup reached it just now)."""
        now = datetime.now(UTC) + timedelta(days=days_later)
        return prune_store(
            self.store(), NAME, extra.pop("policy", POLICY), now=now, keeper=KEEPER, **extra
        )

    def retention(self, key: str, version: str) -> tuple[str | None, datetime | None]:
        head = self.client().head_object(Bucket=self.bucket, Key=self.key(key), VersionId=version)
        return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")

    def versions(self, key: str) -> list[dict[str, Any]]:
        answer = self.client().list_object_versions(Bucket=self.bucket, Prefix=self.key(key))
        return [v for v in answer.get("Versions", []) if v["Key"] == self.key(key)]


def make_locked_bucket(
    server: Endpoint, db: Path, days: int = DEFAULT_RETENTION_DAYS
) -> LockedBucket:
    bucket = unique_bucket()
    client = s3_client(server.url)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
        },
    )
    return LockedBucket(server, bucket, db)


@pytest.fixture(params=["localstack", "moto"])
def locked(request: pytest.FixtureRequest, kotomi_db: Path) -> LockedBucket:
    """A locked bucket on each S3 server in turn (the client environment points at it)."""
    server = request.getfixturevalue(
        f"{request.param}_env" if request.param != "moto" else "aws_env"
    )
    return make_locked_bucket(server, kotomi_db)


@pytest.fixture
def on_localstack(localstack_env: Endpoint, kotomi_db: Path) -> LockedBucket:
    """A locked bucket on LocalStack, which enforces COMPLIANCE as S3 does."""
    return make_locked_bucket(localstack_env, kotomi_db)


Attack = Callable[[], Any]
