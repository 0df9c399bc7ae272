"""The attacks a stolen writer credential (or anyone with write access to the bucket) can try,
made for real against a locked bucket on LocalStack (which enforces S3 Object Lock as S3
does), and on fake-gcs-server for GCS. Each is refused by the store, or detected by `list`,
the health check and the drills; and after each, every good backup still restores, bit-exact.

The attacker here uses the provider's own client with full object rights (these servers do
not evaluate IAM per credential), which is more than the writer's policy grants: what the
bucket itself refuses holds whatever the credential may do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kotomi_backup_dagster.engine.health import (
    BACKUP_BURST,
    BACKUP_TAMPERED,
    Thresholds,
    evaluate,
    inspect_destination,
)
from kotomi_backup_dagster.engine.keeper.guard import KeeperSettings
from kotomi_backup_dagster.engine.layout import list_backups, manifest_key
from kotomi_backup_dagster.engine.manifest import Manifest, rfc3339
from kotomi_backup_dagster.engine.paged.packs import pack_key
from kotomi_backup_dagster.engine.restore import choose_backup, fetch_backup
from kotomi_backup_dagster.engine.stores import ObjectExists, open_store
from kotomi_backup_dagster.engine.survey import survey_store
from tests.conftest import gcs_client, unique_bucket
from tests.engine.keeper.conftest import KEEPER, NAME, POLICY, LockedBucket

STAGED_AT = datetime.now(UTC)


def restores(bucket: LockedBucket, manifest: Manifest, dest: Path) -> None:
    """The backup restores, and its file is exactly the one backed up."""
    chosen = choose_backup([bucket.store()], NAME, manifest.backup_id)
    fetch_backup(chosen, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == manifest.db_sha256
    dest.unlink()


def findings(bucket: LockedBucket, kind: str) -> list[str]:
    state = inspect_destination(bucket.store(), NAME, POLICY, KEEPER)
    report = evaluate(NAME, [state], Thresholds(), datetime.now(UTC))
    return [f.problem for f in report.findings if f.kind == kind]


@pytest.fixture
def protected(on_localstack: LockedBucket) -> tuple[LockedBucket, list[Manifest]]:
    """Two full backups and a paged one, locked by the keeper for their tiers."""
    made = [on_localstack.backup(), on_localstack.backup()]
    made.append(on_localstack.backup(backup_format="paged"))
    result = on_localstack.prune(days_later=0, policy=replace(POLICY, keep_last=3))
    assert result.locks is not None and result.removed == []
    return on_localstack, made


def test_deleting_a_locked_version_is_refused(
    protected: tuple[LockedBucket, list[Manifest]], tmp_path: Path
) -> None:
    bucket, made = protected
    client = bucket.client()
    paged = made[-1]
    targets = [made[0].archive.key, manifest_key(NAME, made[0].backup_id)]
    targets += [pack_key(NAME, p) for p in paged.pack_files()]
    for key in targets:
        [version] = bucket.versions(key)
        with pytest.raises(ClientError) as refused:
            client.delete_object(
                Bucket=bucket.bucket, Key=bucket.key(key), VersionId=version["VersionId"]
            )
        assert refused.value.response["Error"]["Code"] == "AccessDenied", key
    for manifest in made:
        restores(bucket, manifest, tmp_path / "r.db")


def test_shortening_a_compliance_lock_is_refused(
    protected: tuple[LockedBucket, list[Manifest]],
) -> None:
    bucket, made = protected
    key = made[0].archive.key
    version = made[0].version_of(key)
    mode, until = bucket.retention(key, version)
    assert mode == "COMPLIANCE" and until is not None
    with pytest.raises(ClientError) as refused:
        bucket.client().put_object_retention(
            Bucket=bucket.bucket,
            Key=bucket.key(key),
            VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=12)},
        )
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert bucket.retention(key, version) == (mode, until)


def test_an_overwritten_archive_is_detected_and_the_original_restored(
    protected: tuple[LockedBucket, list[Manifest]], tmp_path: Path
) -> None:
    bucket, made = protected
    victim = made[1]
    # Without If-None-Match, a plain PUT makes a second version of the write-once key.
    bucket.client().put_object(
        Bucket=bucket.bucket, Key=bucket.key(victim.archive.key), Body=b"ransom note"
    )
    survey = survey_store(bucket.store(), NAME, POLICY, KEEPER)
    assert "rewritten" in (survey.tampered(victim.backup_id) or "")
    assert [p for p in findings(bucket, BACKUP_TAMPERED) if victim.backup_id in p]
    record = bucket.store()
    from kotomi_backup_dagster.engine.drill import drill_store

    [(_, drilled)] = drill_store(record, NAME, victim.backup_id)
    assert drilled.ok and "rewritten" in str(drilled.checks["objects"])
    restores(bucket, victim, tmp_path / "r.db")


def test_a_rewritten_manifest_is_read_as_first_written(
    protected: tuple[LockedBucket, list[Manifest]], tmp_path: Path
) -> None:
    """A forged manifest.json (pointing the restore at the attacker's database, or naming
    no packs so the keeper frees them) is a second version: every reader uses the first."""
    bucket, made = protected
    victim = made[-1]  # the paged one: its packs are shared
    forged = json.loads(victim.to_json())
    forged["paged"]["packs"], forged["db_sha256"] = {}, "0" * 64
    bucket.client().put_object(
        Bucket=bucket.bucket,
        Key=bucket.key(manifest_key(NAME, victim.backup_id)),
        Body=json.dumps(forged).encode(),
    )
    listed = {
        m.backup_id: m
        for m in list_backups(bucket.store(), NAME, bucket.store().inventory(NAME)).backups
    }
    assert listed[victim.backup_id] == victim
    result = bucket.prune(days_later=0, policy=replace(POLICY, keep_last=3))
    assert not result.packs.removed
    survey = survey_store(bucket.store(), NAME, POLICY, KEEPER)
    assert "rewritten: manifest.json" in (survey.tampered(victim.backup_id) or "")
    restores(bucket, victim, tmp_path / "r.db")


def test_a_hidden_backup_is_detected_never_swept_and_still_restores(
    protected: tuple[LockedBucket, list[Manifest]], tmp_path: Path
) -> None:
    bucket, made = protected
    victim = made[0]
    # A delete without a version id: a delete marker hides the manifest (the writer's
    # policy does not grant s3:DeleteObject; a wider credential does this).
    bucket.client().delete_object(
        Bucket=bucket.bucket, Key=bucket.key(manifest_key(NAME, victim.backup_id))
    )
    assert victim.backup_id not in [m.backup_id for m in list_backups(bucket.store(), NAME).backups]
    assert [p for p in findings(bucket, BACKUP_TAMPERED) if victim.backup_id in p]
    result = bucket.prune(days_later=3, policy=replace(POLICY, keep_last=3))
    assert victim.backup_id not in result.orphans_removed
    assert bucket.versions(victim.archive.key), "its archive is still there"
    restores(bucket, victim, tmp_path / "r.db")


def test_garbage_backups_from_a_stolen_writer_push_no_good_backup_out(
    protected: tuple[LockedBucket, list[Manifest]], tmp_path: Path
) -> None:
    """A burst of well-formed backups (the writer holds the public key: they could even be
    encrypted), some dated a year ahead, some dated now: the future-dated fill no slot, the
    burst is alerted, and the keeper removes no good backup while it settles."""
    bucket, made = protected
    store = bucket.store()
    template = json.loads(made[0].to_json())
    archive = store.get_bytes(made[0].archive.key, made[0].version_of(made[0].archive.key))
    garbage = []
    for n in range(16):
        moment = datetime.now(UTC) + (timedelta(days=365) if n % 2 else timedelta(0))
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
        data = dict(template, backup_id=backup_id, created_at=rfc3339(moment), versions={})
        data["archive"] = dict(template["archive"], key=f"{NAME}/{backup_id}/{NAME}.db.zst")
        store.put_bytes(data["archive"]["key"], archive)
        store.put_bytes(manifest_key(NAME, backup_id), json.dumps(data).encode())
        garbage.append(backup_id)
    survey = survey_store(store, NAME, POLICY, KEEPER)
    future = [g for n, g in enumerate(garbage) if n % 2]
    for backup_id in future:
        assert "after it reached the store" in (survey.tampered(backup_id) or "")
        reasons = survey.tiers(backup_id)  # no slot: kept for inspection, never a tier
        assert all(r == "newest" or r.endswith("kept for inspection") for r in reasons)
    assert findings(bucket, BACKUP_BURST), "the burst is alerted"
    result = bucket.prune(days_later=0)
    assert not set(result.removed) & {m.backup_id for m in made}
    for manifest in made:
        restores(bucket, manifest, tmp_path / "r.db")


def test_a_forged_failed_drill_only_keeps_a_backup_longer(
    protected: tuple[LockedBucket, list[Manifest]],
) -> None:
    bucket, made = protected
    from kotomi_backup_dagster.engine.layout import DrillRecord, write_drill

    newest = made[-1]
    write_drill(
        bucket.store(),
        NAME,
        DrillRecord(
            newest.backup_id, rfc3339(datetime.now(UTC)), False, ["forged"], 0.0, 0, "x", {}
        ),
    )
    result = bucket.prune(days_later=3)
    assert newest.backup_id in [p.manifest.backup_id for p in result.kept]


def test_on_gcs_the_writer_cannot_overwrite_and_a_rewrite_is_detected_and_undone(
    kotomi_db: Path, fake_gcs_env: object, tmp_path: Path
) -> None:
    from kotomi_backup_dagster.engine.backup import (
        stage_archive,
        stage_snapshot,
        stage_upload,
        stage_verify,
    )
    from tests.engine.stores.conftest import settings

    bucket = unique_bucket()
    versioned = gcs_client().bucket(bucket)
    versioned.versioning_enabled = True  # a protected bucket keeps old generations
    gcs_client().create_bucket(versioned)
    url = f"gs://{bucket}/offsite"
    store = open_store(url)
    config = settings(kotomi_db, url)
    staged, _ = stage_snapshot(config)  # the stages: fake-gcs has no testIamPermissions
    assert stage_verify(staged, config).ok
    stage_archive(staged, config)
    [outcome] = stage_upload(staged, [store], settings=config)
    assert outcome.ok and outcome.manifest is not None
    manifest = outcome.manifest
    key = manifest.archive.key
    blob = gcs_client().bucket(bucket).get_blob(f"offsite/{key}")
    assert manifest.versions[key] == str(blob.generation)
    with pytest.raises(ObjectExists):  # our writer: create-only (ifGenerationMatch=0)
        store.put_bytes(key, b"other bytes")
    gcs_client().bucket(bucket).blob(f"offsite/{key}").upload_from_string(b"ransom note")
    survey = survey_store(store, NAME, POLICY, KeeperSettings(role="keeper"))
    assert "rewritten" in (survey.tampered(manifest.backup_id) or "")
    chosen = choose_backup([store], NAME, manifest.backup_id)
    fetch_backup(chosen, tmp_path / "r.db")
    assert hashlib.sha256((tmp_path / "r.db").read_bytes()).hexdigest() == manifest.db_sha256


def test_a_store_written_before_on_a_versioned_bucket_is_not_taken_for_tampering(
    kotomi_db: Path, s3_bucket: str, aws_env: object, tmp_path: Path
) -> None:
    """Earlier versions of this tool rewrote a repacked manifest in place and uploaded an
    archive again on a re-run: on a versioned bucket those are extra versions that are not
    tampering. A rewrite of any other kind still is."""
    from kotomi_backup_dagster.engine.backup import run_backup
    from tests.conftest import s3_client
    from tests.engine.stores.conftest import backups_at, settings

    client = s3_client(aws_env.url)  # type: ignore[attr-defined]
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    url = f"s3://{s3_bucket}/old"
    paged = run_backup(settings(kotomi_db, url, backup_format="paged")).manifest
    # A backup as an earlier version wrote it: no `versions` in its manifest.
    [full] = backups_at(kotomi_db, url, tmp_path, [datetime.now(UTC) - timedelta(hours=1)])
    assert not full.versions
    store = open_store(url)
    # The old repack: the same backup, rewritten in place with `repacked_at`.
    repacked = json.loads(paged.to_json())
    repacked["paged"]["repacked_at"] = "20261201T000000000000Z"
    key = f"old/{manifest_key(NAME, paged.backup_id)}"
    client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(repacked).encode())
    # The old re-run: the same archive bytes again.
    archive = store.get_bytes(full.archive.key)
    client.put_object(Bucket=s3_bucket, Key=f"old/{full.archive.key}", Body=archive)
    survey = survey_store(store, NAME, POLICY, KeeperSettings())
    assert survey.tampered(paged.backup_id) is None and survey.tampered(full.backup_id) is None
    listed = {m.backup_id: m for m in survey.backups}
    assert (listed[paged.backup_id].paged or {}).get("repacked_at")  # the current one is used
    # Anything else written over manifest.json is tampering, and the first version is read.
    forged = dict(json.loads(full.to_json()), db_sha256="0" * 64)
    key = f"old/{manifest_key(NAME, full.backup_id)}"
    client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(forged).encode())
    survey = survey_store(store, NAME, POLICY, KeeperSettings())
    assert "rewritten: manifest.json" in (survey.tampered(full.backup_id) or "")
    assert {m.backup_id: m for m in survey.backups}[full.backup_id].db_sha256 == full.db_sha256
