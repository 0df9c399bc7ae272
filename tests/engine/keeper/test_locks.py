"""The keeper's locks on real S3 servers: every object a kept backup needs stays locked until
the backup leaves its longest tier, packs until the latest need plus slack, nothing is ever
shortened, removal only hides (delete markers) what its lock still holds, and a second run
changes nothing. The writer itself never sets a lock: the bucket's default retention does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kotomi_backup_dagster.engine.layout import list_backups, manifest_key
from kotomi_backup_dagster.engine.paged.packs import pack_key
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from tests.engine.keeper.conftest import DEFAULT_RETENTION_DAYS, NAME, LockedBucket

SLACK = timedelta(days=10)


def start_of_day(moment: datetime, days: int = 0) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=days)


def test_kept_backups_are_locked_to_their_tier_and_removed_ones_only_hidden(
    locked: LockedBucket,
) -> None:
    made = [locked.backup() for _ in range(3)]
    today = datetime.now(UTC)
    for manifest in made:
        key = manifest.archive.key
        [version] = locked.versions(key)
        assert manifest.versions == {key: version["VersionId"]}, "the manifest names its version"
        mode, until = locked.retention(key, version["VersionId"])
        assert mode == "COMPLIANCE", "locked from its first second by the bucket's default"
        assert until is not None and until > today + timedelta(days=DEFAULT_RETENTION_DAYS - 0.1)

    result = locked.prune(days_later=3)
    oldest, removed, newest = made
    # The newest of the day, and the oldest while the daily tier has slots left (restic).
    assert [p.manifest.backup_id for p in result.kept] == [newest.backup_id, oldest.backup_id]
    assert result.removed == [removed.backup_id]
    assert result.locks is not None and result.locks.mode == "compliance"

    # Their day (by the store's clock) closed: locked until it leaves the 7 daily slots.
    inventory = locked.store().inventory(NAME)
    for manifest in (newest, oldest):
        stored = inventory[manifest_key(NAME, manifest.backup_id)].first_stored_at
        expected = start_of_day(stored, 7)
        for key in (manifest_key(NAME, manifest.backup_id), manifest.archive.key):
            [version] = locked.versions(key)
            mode, until = locked.retention(key, version["VersionId"])
            assert (mode, until) == ("COMPLIANCE", expected), key

    # Removed is hidden: not listed, its versions still there, locked, and readable.
    listed = [m.backup_id for m in list_backups(locked.store(), NAME).backups]
    assert listed == [newest.backup_id, oldest.backup_id]
    for manifest in [removed]:
        key = manifest.archive.key
        version = manifest.version_of(key)
        with pytest.raises(ClientError) as refused:
            locked.client().delete_object(
                Bucket=locked.bucket, Key=locked.key(key), VersionId=version
            )
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        data = locked.store().get_bytes(key, version)
        assert hashlib.sha256(data).hexdigest() == manifest.archive.sha256

    again = locked.prune(days_later=3)
    assert again.locks is not None and again.locks.extended == []
    assert again.locks.requests == again.locks.checked, "a second run only reads"


def test_an_hourly_keeper_reads_each_lock_once_a_day(locked: LockedBucket, tmp_path: Path) -> None:
    locked.backup()
    memory = tmp_path / "locks.json"
    first = locked.prune(days_later=3, lock_memory=memory)
    assert first.locks is not None and first.locks.extended and first.locks.requests > 0
    hour_later = locked.prune(days_later=3 + 1 / 24, lock_memory=memory)
    assert hour_later.locks is not None and hour_later.locks.requests == 0
    day_later = locked.prune(days_later=4.1, lock_memory=memory)
    assert day_later.locks is not None and day_later.locks.requests >= day_later.locks.checked


def test_a_lock_already_longer_is_never_touched(locked: LockedBucket) -> None:
    manifest = locked.backup()
    key = manifest.archive.key
    version = manifest.version_of(key)
    far = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)
    locked.client().put_object_retention(
        Bucket=locked.bucket,
        Key=locked.key(key),
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": far},
    )
    result = locked.prune(days_later=3)
    assert result.locks is not None
    assert key not in [k for k, _ in result.locks.extended]
    assert locked.retention(key, version) == ("COMPLIANCE", far)


def test_packs_are_locked_to_their_latest_need_plus_slack_and_not_again_each_run(
    locked: LockedBucket,
) -> None:
    first = locked.backup(backup_format="paged")
    second = locked.backup(backup_format="paged")
    shared = set(first.pack_files()) & set(second.pack_files())
    assert shared, "the second paged backup reuses the first one's packs"
    policy = RetentionPolicy(keep_last=2)  # both kept; "last" has no end: rolling
    now = datetime.now(UTC) + timedelta(days=3)
    result = locked.prune(days_later=3, policy=policy)
    assert result.locks is not None and {p.manifest.backup_id for p in result.kept} == {
        first.backup_id,
        second.backup_id,
    }
    extended = dict(result.locks.extended)
    for pack in shared:
        key = pack_key(NAME, pack)
        until = extended[key]
        # Rolling need (now + a day) plus the slack; one lock for both backups.
        assert now + timedelta(days=1) + SLACK - timedelta(minutes=5) < until
        assert until < now + timedelta(days=1) + SLACK + timedelta(minutes=5)
        _, stored = locked.retention(key, second.version_of(key))
        assert stored is not None and abs(stored - until) < timedelta(seconds=2)

    # A day later the packs' locks still cover the need: none is extended again.
    later = locked.prune(days_later=4, policy=policy)
    assert later.locks is not None
    assert not {k for k, _ in later.locks.extended} & {pack_key(NAME, p) for p in shared}


def test_without_a_locking_bucket_nothing_is_locked_and_asking_for_it_is_refused(
    kotomi_db: object, s3_bucket: str, aws_env: object
) -> None:
    from kotomi_backup_dagster.engine.errors import ConfigError
    from kotomi_backup_dagster.engine.keeper.guard import KeeperSettings
    from kotomi_backup_dagster.engine.prune import prune_store
    from kotomi_backup_dagster.engine.stores import open_store
    from tests.engine.keeper.conftest import POLICY

    store = open_store(f"s3://{s3_bucket}/p")
    result = prune_store(store, NAME, POLICY, keeper=KeeperSettings())
    assert result.locks is None
    with pytest.raises(ConfigError, match="has no object lock"):
        prune_store(store, NAME, POLICY, keeper=KeeperSettings(lock="compliance"))


def test_gcs_retention_is_set_read_and_listed_as_the_keeper_uses_it(
    fake_gcs_env: object,
) -> None:
    """fake-gcs-server stores object retention (it does not enforce it): the keeper's GCS
    requests set a lock, read it back, and find it in the listing (no request per object)."""
    from kotomi_backup_dagster.engine.stores import LockingStore, open_store
    from tests.conftest import gcs_client, unique_bucket

    bucket = unique_bucket()
    gcs_client().create_bucket(bucket)
    store = open_store(f"gs://{bucket}/p")
    assert isinstance(store, LockingStore)
    stored = store.put_bytes("kotomi/x/manifest.json", b"{}")
    assert store.lock_of("kotomi/x/manifest.json", stored.version) is None
    until = (datetime.now(UTC) + timedelta(days=9)).replace(microsecond=0)
    store.extend_lock("kotomi/x/manifest.json", stored.version, until, "compliance")
    lock = store.lock_of("kotomi/x/manifest.json", stored.version)
    assert lock is not None and (lock.mode, lock.until) == ("compliance", until)
    [state] = store.inventory("kotomi").values()
    assert state.lock_known and state.lock == lock and state.version == stored.version


def test_a_lock_shortened_behind_the_keepers_back_is_reported(
    aws_env: object, kotomi_db: Path
) -> None:
    """moto lets a COMPLIANCE lock be shortened (S3 does not: LocalStack refuses it, see
    test_attacks.py); where a store lets it happen, the survey reports the backup."""
    from kotomi_backup_dagster.engine.survey import survey_store
    from tests.engine.keeper.conftest import KEEPER, POLICY, make_locked_bucket

    locked = make_locked_bucket(aws_env, kotomi_db)  # type: ignore[arg-type]
    manifest = locked.backup()
    result = locked.prune(days_later=3)
    assert result.locks is not None and result.locks.extended
    key = manifest.archive.key
    version = manifest.version_of(key)
    soon = (datetime.now(UTC) + timedelta(days=2, hours=12)).replace(microsecond=0)
    locked.client().put_object_retention(
        Bucket=locked.bucket,
        Key=locked.key(key),
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon},
    )
    later = datetime.now(UTC) + timedelta(days=3)
    survey = survey_store(locked.store(), NAME, POLICY, KEEPER, now=later)
    found = survey.tampered(manifest.backup_id) or ""
    assert "unlocked early" in found and "kotomi.db.zst is locked until" in found, found
    assert survey.locked_until(manifest.backup_id) == soon
