"""What the test servers enforce of S3's and GCS's rules, checked on the servers themselves
with the providers' own clients (boto3, google-cloud-storage), no code of ours in between.

The tests of immutable backups rely on these rules, each on a server that enforces it. Every
rule runs on each server of its provider: where a server does not enforce it, that case is a
strict xfail whose reason says what the server does instead. So a server upgrade that drops a
rule fails here, and one that starts enforcing a rule (an XPASS) fails too, until the table in
docs/test-servers.md and the xfail are brought up to date.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import gcs_client, point_aws_at, point_gcs_at, s3_client, unique_bucket
from tests.servers import Endpoint

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
# A server keeps a retain-until date to the second or to the millisecond.
SECOND = dt.timedelta(seconds=2)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def server_params(enforced_by: list[str], not_enforced: dict[str, str]) -> list[Any]:
    """One case per server: the ones that enforce the rule, then the others as strict xfails
    with what they do instead."""
    cases = [pytest.param(name, id=name) for name in enforced_by]
    cases += [
        pytest.param(name, id=name, marks=pytest.mark.xfail(strict=True, reason=reason))
        for name, reason in not_enforced.items()
    ]
    return cases


# Fixture names: LocalStack's S3 and moto (S3); fake-gcs-server and gcp-storage-emulator (GCS).
S3_BOTH = server_params(["localstack", "moto"], {})
GCS_FAKE_ONLY = "fake_gcs_server"
EMULATOR = "gcs_server"


def refused(call: Callable[..., Any], **request: Any) -> tuple[int, str]:
    """The HTTP status and S3 error code of a request expected to be refused."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        call(**request)
    error = refused.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def s3(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """A boto3 client on the server the test is parametrized with (its fixture's name)."""
    endpoint: Endpoint = request.getfixturevalue(server)
    point_aws_at(monkeypatch, endpoint, tmp_path)
    return s3_client(endpoint.url)


def lock_bucket(s3: Any, default: str | None = None) -> str:
    """A new bucket with Object Lock (so versioning) on; `default`: a default retention of
    one day in that mode, set before anything is written (moto refuses it on a bucket that
    holds objects)."""
    name = unique_bucket()
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    if default:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": default, "Days": 1}},
            },
        )
    return name


def put_multipart(s3: Any, bucket: str, key: str, body: bytes, **complete: Any) -> Any:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)
    return s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        **complete,
    )


def put_locked(s3: Any, bucket: str, key: str, mode: str, until: dt.datetime) -> str:
    put = s3.put_object(
        Bucket=bucket, Key=key, Body=b"locked", ObjectLockMode=mode, ObjectLockRetainUntilDate=until
    )
    version: str = put["VersionId"]
    return version


def read(s3: Any, bucket: str, key: str, version: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    return body


def retained_until(s3: Any, bucket: str, key: str, version: str) -> dt.datetime:
    head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
    until: dt.datetime = head["ObjectLockRetainUntilDate"]
    return until


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_create_only_put_refused_on_an_existing_key(s3: Any) -> None:
    bucket = lock_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"original", IfNoneMatch="*")

    again = {"Bucket": bucket, "Key": "k", "Body": b"replaced", "IfNoneMatch": "*"}
    assert refused(s3.put_object, **again) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 1


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_create_only_multipart_completion_refused_on_an_existing_key(s3: Any) -> None:
    bucket = lock_bucket(s3)
    put_multipart(s3, bucket, "k", b"original", IfNoneMatch="*")

    again = {"s3": s3, "bucket": bucket, "key": "k", "body": b"replaced", "IfNoneMatch": "*"}
    assert refused(put_multipart, **again) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"


def assert_locked_for_a_day(head: dict[str, Any], mode: str) -> None:
    assert head.get("ObjectLockMode") == mode
    assert now() + DAY - HOUR < head["ObjectLockRetainUntilDate"] < now() + DAY + SECOND


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_default_retention_locks_a_new_object(s3: Any, mode: str) -> None:
    bucket = lock_bucket(s3, default=mode)
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]

    assert_locked_for_a_day(s3.head_object(Bucket=bucket, Key="k", VersionId=version), mode)


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
@pytest.mark.parametrize(
    "server",
    server_params(
        ["localstack"], {"moto": "moto 5.2.6 does not apply default retention to multipart"}
    ),
)
def test_s3_default_retention_locks_a_new_multipart_object(s3: Any, mode: str) -> None:
    bucket = lock_bucket(s3, default=mode)
    version = put_multipart(s3, bucket, "k", b"x")["VersionId"]

    assert_locked_for_a_day(s3.head_object(Bucket=bucket, Key="k", VersionId=version), mode)


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_a_locked_version_cannot_be_deleted(s3: Any, mode: str) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", mode, now() + DAY)

    delete = {"Bucket": bucket, "Key": "k", "VersionId": version}
    assert refused(s3.delete_object, **delete) == (403, "AccessDenied")
    assert read(s3, bucket, "k", version) == b"locked"


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_governance_deletion_needs_the_bypass(s3: Any) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", "GOVERNANCE", now() + DAY)

    s3.delete_object(Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True)
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_delete_without_a_version_hides_behind_a_marker(s3: Any) -> None:
    bucket = lock_bucket(s3, default="COMPLIANCE")
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"original")["VersionId"]

    assert s3.delete_object(Bucket=bucket, Key="k")["DeleteMarker"] is True
    assert refused(s3.get_object, Bucket=bucket, Key="k") == (404, "NoSuchKey")
    assert read(s3, bucket, "k", version) == b"original"


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_the_original_version_reads_after_an_overwrite(s3: Any) -> None:
    bucket = lock_bucket(s3, default="COMPLIANCE")
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"original")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"replaced")

    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"replaced"
    assert read(s3, bucket, "k", version) == b"original"


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_versions_and_delete_markers_are_listed(s3: Any) -> None:
    bucket = lock_bucket(s3)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]

    listed = s3.list_object_versions(Bucket=bucket, Prefix="k")
    assert {v["VersionId"] for v in listed["Versions"]} == {first, second}
    assert not any(v["IsLatest"] for v in listed["Versions"])
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker, True)]


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_a_compliance_lock_can_be_extended(s3: Any) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", "COMPLIANCE", now() + DAY)

    longer = {"Mode": "COMPLIANCE", "RetainUntilDate": now() + 3 * DAY}
    s3.put_object_retention(Bucket=bucket, Key="k", VersionId=version, Retention=longer)
    assert retained_until(s3, bucket, "k", version) > now() + 2 * DAY


@pytest.mark.parametrize(
    "server",
    server_params(["localstack"], {"moto": "moto 5.2.6 lets a COMPLIANCE lock be shortened"}),
)
def test_s3_a_compliance_lock_cannot_be_shortened(s3: Any) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", "COMPLIANCE", now() + 2 * DAY)

    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": now() + HOUR}
    request = {"Bucket": bucket, "Key": "k", "VersionId": version, "Retention": shorter}
    assert refused(s3.put_object_retention, **request) == (403, "AccessDenied")
    assert retained_until(s3, bucket, "k", version) > now() + DAY


@pytest.mark.parametrize(
    "server",
    server_params(["localstack"], {"moto": "moto 5.2.6 lets COMPLIANCE become GOVERNANCE"}),
)
def test_s3_a_compliance_lock_cannot_become_governance(s3: Any) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", "COMPLIANCE", now() + DAY)

    weaker = {"Mode": "GOVERNANCE", "RetainUntilDate": now() + 2 * DAY}
    request = {"Bucket": bucket, "Key": "k", "VersionId": version, "Retention": weaker}
    assert refused(s3.put_object_retention, **request) == (403, "AccessDenied")


@pytest.mark.parametrize(
    "server",
    server_params(
        ["localstack"], {"moto": "moto 5.2.6 lets a GOVERNANCE lock be shortened without bypass"}
    ),
)
def test_s3_a_governance_lock_is_shortened_only_with_the_bypass(s3: Any) -> None:
    bucket = lock_bucket(s3)
    version = put_locked(s3, bucket, "k", "GOVERNANCE", now() + 2 * DAY)
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": now() + HOUR}
    request = {"Bucket": bucket, "Key": "k", "VersionId": version, "Retention": shorter}

    assert refused(s3.put_object_retention, **request) == (403, "AccessDenied")
    s3.put_object_retention(**request, BypassGovernanceRetention=True)
    assert retained_until(s3, bucket, "k", version) < now() + DAY


@pytest.mark.parametrize(
    "server",
    server_params(["localstack"], {"moto": "moto 5.2.6 answers GetObjectRetention with a 500"}),
)
def test_s3_get_object_retention(s3: Any) -> None:
    bucket = lock_bucket(s3)
    until = now() + DAY
    version = put_locked(s3, bucket, "k", "COMPLIANCE", until)

    retention = s3.get_object_retention(Bucket=bucket, Key="k", VersionId=version)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert abs(retention["RetainUntilDate"] - until) < SECOND


@pytest.mark.parametrize("server", S3_BOTH)
def test_s3_a_legal_hold_blocks_deletion_until_released(s3: Any) -> None:
    bucket = lock_bucket(s3)
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"held", ObjectLockLegalHoldStatus="ON")
    version = put["VersionId"]
    held = s3.get_object_legal_hold(Bucket=bucket, Key="k", VersionId=version)
    assert held["LegalHold"]["Status"] == "ON"

    delete = {"Bucket": bucket, "Key": "k", "VersionId": version}
    assert refused(s3.delete_object, **delete) == (403, "AccessDenied")
    # The governance bypass does not lift a legal hold.
    bypass = {**delete, "BypassGovernanceRetention": True}
    assert refused(s3.delete_object, **bypass) == (403, "AccessDenied")
    s3.put_object_legal_hold(**delete, LegalHold={"Status": "OFF"})
    s3.delete_object(**delete)
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)


@pytest.mark.parametrize(
    "server",
    server_params(
        ["localstack"], {"moto": "moto 5.2.6 suspends versioning on an Object Lock bucket"}
    ),
)
def test_s3_versioning_cannot_be_suspended_on_a_lock_bucket(s3: Any) -> None:
    bucket = lock_bucket(s3)

    suspend = {"Bucket": bucket, "VersioningConfiguration": {"Status": "Suspended"}}
    assert refused(s3.put_bucket_versioning, **suspend) == (409, "InvalidBucketState")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


@pytest.mark.parametrize(
    "server",
    server_params(
        ["moto"],
        {"localstack": "LocalStack's community S3 stores a bucket policy, never applies it"},
    ),
)
def test_s3_a_bucket_policy_deny_on_delete_is_applied(s3: Any) -> None:
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    policy = {"Version": "2012-10-17", "Statement": [deny]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    status, _ = refused(s3.delete_object, Bucket=bucket, Key="k")
    assert status == 403
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


# --- GCS -------------------------------------------------------------------------------------


@pytest.fixture
def gcs(server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """google-cloud-storage's client on the server the test is parametrized with."""
    endpoint: Endpoint = request.getfixturevalue(server)
    point_gcs_at(monkeypatch, endpoint)
    return gcs_client()


def versioned_bucket(gcs: Any, **settings: Any) -> Any:
    bucket = gcs.bucket(unique_bucket())
    bucket.versioning_enabled = True
    return gcs.create_bucket(bucket, **settings)


def upload_twice(bucket: Any) -> tuple[int, int]:
    """An object written, then overwritten: both generations."""
    first = bucket.blob("k")
    first.upload_from_string(b"original", if_generation_match=0)
    second = bucket.blob("k")
    second.upload_from_string(b"replaced")
    return first.generation, second.generation


NO_PRECONDITIONS = "gcp-storage-emulator ignores ifGenerationMatch: the write goes through"
NO_GENERATIONS = "gcp-storage-emulator keeps one generation: it answers with the current one"


@pytest.mark.parametrize("server", server_params([GCS_FAKE_ONLY], {EMULATOR: NO_PRECONDITIONS}))
def test_gcs_create_only_upload_refused_on_an_existing_name(gcs: Any) -> None:
    from google.api_core.exceptions import PreconditionFailed

    bucket = versioned_bucket(gcs)
    bucket.blob("k").upload_from_string(b"original", if_generation_match=0)

    with pytest.raises(PreconditionFailed):
        bucket.blob("k").upload_from_string(b"replaced", if_generation_match=0)
    assert bucket.blob("k").download_as_bytes() == b"original"


@pytest.mark.parametrize(
    "server",
    server_params(
        [],
        {
            GCS_FAKE_ONLY: "fake-gcs-server 1.54.0 drops a resumable upload's preconditions "
            "(fixed upstream after 1.54.0)",
            EMULATOR: NO_PRECONDITIONS,
        },
    ),
)
def test_gcs_create_only_resumable_upload_refused_on_an_existing_name(gcs: Any) -> None:
    from google.api_core.exceptions import PreconditionFailed

    bucket = versioned_bucket(gcs)
    bucket.blob("k").upload_from_string(b"original", if_generation_match=0)
    # The client uploads more than 8 MiB in a resumable session (less in one request), as
    # our GCS store does past its chunk size.
    body = b"r" * (8 * 1024 * 1024 + 1)

    with pytest.raises(PreconditionFailed):
        bucket.blob("k", chunk_size=8 * 1024 * 1024).upload_from_string(body, if_generation_match=0)
    assert bucket.blob("k").download_as_bytes() == b"original"


@pytest.mark.parametrize("server", server_params([GCS_FAKE_ONLY], {EMULATOR: NO_GENERATIONS}))
def test_gcs_the_original_generation_reads_after_an_overwrite(gcs: Any) -> None:
    bucket = versioned_bucket(gcs)
    first, second = upload_twice(bucket)

    assert first != second
    assert bucket.blob("k").download_as_bytes() == b"replaced"
    assert bucket.blob("k", generation=first).download_as_bytes() == b"original"


@pytest.mark.parametrize(
    "server",
    server_params(
        [GCS_FAKE_ONLY], {EMULATOR: "gcp-storage-emulator forgets a deleted object's data"}
    ),
)
def test_gcs_the_original_generation_reads_after_a_delete(gcs: Any) -> None:
    from google.api_core.exceptions import NotFound

    bucket = versioned_bucket(gcs)
    first, _ = upload_twice(bucket)
    bucket.blob("k").delete()

    with pytest.raises(NotFound):
        bucket.blob("k").download_as_bytes()
    assert bucket.blob("k", generation=first).download_as_bytes() == b"original"


@pytest.mark.parametrize(
    "server",
    server_params(
        [],
        {
            GCS_FAKE_ONLY: "fake-gcs-server 1.54.0 lists only live generations with versions=true",
            EMULATOR: "gcp-storage-emulator lists only live objects with versions=true",
        },
    ),
)
def test_gcs_a_versioned_listing_shows_noncurrent_generations(gcs: Any) -> None:
    bucket = versioned_bucket(gcs)
    first, second = upload_twice(bucket)

    listed = {blob.generation for blob in gcs.list_blobs(bucket.name, versions=True)}
    assert listed == {first, second}


def retain(blob: Any, until: dt.datetime) -> None:
    blob.retention.mode = "Locked"
    blob.retention.retain_until_time = until
    blob.patch()


@pytest.mark.parametrize(
    "server",
    server_params([GCS_FAKE_ONLY], {EMULATOR: "gcp-storage-emulator drops object retention"}),
)
def test_gcs_object_retention_is_stored(gcs: Any) -> None:
    bucket = versioned_bucket(gcs, enable_object_retention=True)
    bucket.blob("k").upload_from_string(b"x", if_generation_match=0)
    until = now() + DAY
    retain(bucket.get_blob("k"), until)

    stored = bucket.get_blob("k").retention
    assert stored.mode == "Locked"
    assert abs(stored.retain_until_time - until) < SECOND


@pytest.mark.parametrize(
    "server",
    server_params(
        [],
        {
            GCS_FAKE_ONLY: "fake-gcs-server 1.54.0 stores object retention, deletes anyway",
            EMULATOR: "gcp-storage-emulator drops object retention",
        },
    ),
)
def test_gcs_a_retained_object_cannot_be_deleted(gcs: Any) -> None:
    from google.api_core.exceptions import Forbidden

    bucket = versioned_bucket(gcs, enable_object_retention=True)
    bucket.blob("k").upload_from_string(b"x", if_generation_match=0)
    blob = bucket.get_blob("k")
    retain(blob, now() + DAY)

    with pytest.raises(Forbidden):
        bucket.blob("k", generation=blob.generation).delete()


def test_fake_gcs_server_answers_the_client_anonymously(fake_gcs_env: Endpoint) -> None:
    """The fixture's contract: STORAGE_EMULATOR_HOST alone, no credentials, no project."""
    from google.cloud import storage

    client = storage.Client()
    name = f"kotomi-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    assert name in {bucket.name for bucket in client.list_buckets()}
