"""The documented IAM policies (deploy/policies/s3-writer.json, s3-keeper.json), loaded as they
are into IAM users of a moto server in auth mode (moto evaluates identity policies), and the
real CLI run with each credential: the writer backs up, lists and restores, and can delete,
overwrite-lock or prune nothing; the keeper prunes, drills and locks. A command that lacks a
right says which one, in one line, with exit 2, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import kotomi_requests, one_line_error, run_cli
from tests.servers import admin_client, moto_process, require_auth

REPO = Path(__file__).resolve().parents[3]
ONLY_THE_NEWEST = {
    "KOTOMI_BACKUP_KEEP_LAST": "1",
    **{f"KOTOMI_BACKUP_KEEP_{k}": "0" for k in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")},
}
BUCKET = "kotomi-policies"
PREFIX = "offsite"
URL = f"s3://{BUCKET}/{PREFIX}"


@dataclass(frozen=True)
class Server:
    url: str
    keys: dict[str, tuple[str, str]]

    def client(self, who: str) -> object:
        import boto3
        from botocore.config import Config

        key, secret = self.keys[who]
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def env(self, who: str, tmp_path: Path, **extra: str) -> dict[str, str]:
        key, secret = self.keys[who]
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "KOTOMI_BACKUP_URL": URL,
            "KOTOMI_BACKUP_RETRIES": "1",
            **extra,
        }


# moto checks a request against "s3:<API operation>" (s3:HeadObject), where AWS checks the
# IAM action the operation needs (s3:GetObject for HeadObject). The operations each IAM action
# covers, from AWS's table of S3 actions: a documented policy is translated with it, so moto
# enforces the same rights.
OPERATIONS = {
    "s3:ListBucket": ["ListObjects", "ListObjectsV2", "HeadBucket"],
    "s3:ListBucketVersions": ["ListObjectVersions"],
    "s3:GetObject": ["GetObject", "HeadObject"],
    "s3:GetObjectVersion": ["GetObject", "HeadObject"],
    "s3:GetObjectRetention": ["GetObjectRetention"],
    "s3:PutObject": ["PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"],
    "s3:AbortMultipartUpload": ["AbortMultipartUpload"],
    "s3:DeleteObject": ["DeleteObject", "DeleteObjects"],
    "s3:PutObjectRetention": ["PutObjectRetention"],
    "s3:GetBucketVersioning": ["GetBucketVersioning"],
    "s3:GetBucketObjectLockConfiguration": ["GetObjectLockConfiguration"],
}


def policy(name: str) -> str:
    """A documented policy with this test's bucket and prefix, its actions as moto names
    them."""
    text = (REPO / "deploy" / "policies" / name).read_text()
    document = json.loads(text.replace("BUCKET", BUCKET).replace("PREFIX", PREFIX))
    for statement in document["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        statement["Action"] = sorted({f"s3:{op}" for a in actions for op in OPERATIONS[a]})
        # DeleteObjects is a request on the bucket: its resource is the bucket itself.
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        statement["Resource"] = [*resources, f"arn:aws:s3:::{BUCKET}"]
    return json.dumps(document)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """moto in auth mode (a process of its own), a bucket with Object Lock on (a day of
    COMPLIANCE by default), and a user per documented policy."""
    with moto_process() as endpoint:
        s3 = admin_client(endpoint, "s3")
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                # One day: less than a kept backup needs, so the keeper has locks to extend.
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
        iam = admin_client(endpoint, "iam")
        keys = {}
        for user, document in (("writer", "s3-writer.json"), ("keeper", "s3-keeper.json")):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy(document))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        require_auth(endpoint)  # from now on, IAM decides
        yield Server(endpoint.url, keys)


def listed(server: Server, tmp_path: Path, who: str = "writer") -> list[str]:
    proc = run_cli("list", "--json", env=server.env(who, tmp_path))
    assert proc.returncode == 0, proc.stderr
    [dest] = json.loads(proc.stdout)["destinations"]
    return [b["backup_id"] for b in dest["backups"]]


def test_the_writer_backs_up_lists_and_restores_and_can_destroy_nothing(
    server: Server, kotomi_db: Path, tmp_path: Path
) -> None:
    env = server.env("writer", tmp_path, KOTOMI_DB_PATH=str(kotomi_db), KOTOMI_BACKUP_ROLE="writer")
    for n in range(2):
        kotomi_requests(kotomi_db, 10, seed=300 + n)
        made = run_cli("backup", env=env)
        assert made.returncode == 0, made.stderr
    for fmt in ("paged",):
        made = run_cli("backup", "--format", fmt, env=env)
        assert made.returncode == 0, made.stderr
    ids = listed(server, tmp_path)
    assert len(ids) == 3
    restored = tmp_path / "restored.db"
    proc = run_cli("restore", "latest", "--db", str(restored), env=env)
    assert proc.returncode == 0, proc.stderr

    # Its role refuses the keeper's work at once; its credentials refuse it anyway.
    refused = run_cli("prune", env=env)
    assert refused.returncode == 2 and "keeper's work" in one_line_error(refused)
    as_both = {**env, "KOTOMI_BACKUP_ROLE": "both", **ONLY_THE_NEWEST}
    locking = run_cli("prune", env=as_both)  # locks first: the right to extend them is missing
    assert locking.returncode == 2, locking.stderr
    assert "s3:PutObjectRetention" in one_line_error(locking)
    deleting = run_cli("prune", env={**as_both, "KOTOMI_BACKUP_LOCK": "off"})
    assert deleting.returncode == 2, deleting.stderr
    line = one_line_error(deleting)
    assert "s3:DeleteObject" in line and "access denied" in line, line
    assert listed(server, tmp_path) == ids, "a refused prune left everything as it was"

    # The writer's credential itself. (moto checks PutObjectRetention as s3:PutObject, so the
    # policy's refusal of lock changes rests on AWS's documentation: docs/immutability.md.)
    client = server.client("writer")
    key = f"{PREFIX}/kotomi/{ids[-1]}/manifest.json"
    for attempt in (
        lambda: client.delete_object(Bucket=BUCKET, Key=key),
        lambda: client.put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}
        ),
        lambda: client.put_object_lock_configuration(
            Bucket=BUCKET, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        ),
    ):
        with pytest.raises(ClientError) as caught:
            attempt()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"


def test_the_keeper_prunes_drills_and_locks_and_takes_no_backup(
    server: Server, kotomi_db: Path, tmp_path: Path, age_key: object
) -> None:
    writer = server.env("writer", tmp_path, KOTOMI_DB_PATH=str(kotomi_db))
    for n in range(2):
        kotomi_requests(kotomi_db, 10, seed=400 + n)
        assert run_cli("backup", env=writer).returncode == 0
    keeper = server.env("keeper", tmp_path, KOTOMI_BACKUP_ROLE="keeper")
    refused = run_cli("backup", "--db", str(kotomi_db), env=keeper)
    assert refused.returncode == 2 and "writer's work" in one_line_error(refused)
    drilled = run_cli("drill", "latest", "--json", env=keeper)
    assert drilled.returncode == 0, drilled.stderr
    pruned = run_cli("prune", "--json", env=keeper)
    assert pruned.returncode == 0, pruned.stderr
    [dest] = json.loads(pruned.stdout)["destinations"]
    assert dest["locks"]["mode"] == "compliance"
    assert dest["locks"]["extended"], "the keeper extended the kept backups' locks"
    # Deleting is the keeper's right: one of several today's backups goes when not settling.
    both = {**keeper, "KOTOMI_BACKUP_ROLE": "both", "KOTOMI_BACKUP_LOCK": "off"}
    before = listed(server, tmp_path, "keeper")
    removed = run_cli("prune", "--json", env={**both, **ONLY_THE_NEWEST})
    assert removed.returncode == 0, removed.stderr
    [dest] = json.loads(removed.stdout)["destinations"]
    assert dest["removed"] and set(dest["removed"]) < set(before)
