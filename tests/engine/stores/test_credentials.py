"""Credentials refused are a configuration problem wherever they are met (exit 2), and a
refusal without a reason (HeadBucket's bare 400) names every cause it can have.

S3 here is a moto server of its own in auth mode (a separate process: auth mode is global to
a moto process), with IAM users whose policies really refuse; faults the server cannot make
on demand (a signature mismatch, an expired token, GCS refusing) come from the fault proxy as
real HTTP answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import ConfigError
from tests.conftest import one_line_error, run_cli
from tests.engine.stores.conftest import is_upload, settings
from tests.servers import Endpoint, FaultProxy, Rule, admin_client, moto_process, require_auth

BUCKET = "kotomi-auth"


@dataclass(frozen=True)
class AuthS3:
    endpoint: Endpoint
    writer: tuple[str, str]  # may do anything on the bucket
    no_put: tuple[str, str]  # may list and read, every write refused

    @property
    def url(self) -> str:
        return self.endpoint.url

    def require_auth(self, after: int = 0) -> None:
        """From now, every request but the next `after` is authenticated against IAM."""
        require_auth(self.endpoint, after)


@pytest.fixture(scope="module")
def auth_s3() -> Iterator[AuthS3]:
    with moto_process() as endpoint:
        admin_client(endpoint, "s3").create_bucket(Bucket=BUCKET)
        iam = admin_client(endpoint, "iam")
        keys = {}
        for user, statements in {
            "writer": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            "no-put": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},
            ],
        }.items():
            iam.create_user(UserName=user)
            policy = {"Version": "2012-10-17", "Statement": statements}
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        yield AuthS3(endpoint=endpoint, writer=keys["writer"], no_put=keys["no-put"])


def aws(server: AuthS3, key: tuple[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: these credentials, this endpoint, nothing of the machine's."""
    return {
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": server.url,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "KOTOMI_BACKUP_RETRIES": "1",
        **extra,
    }


def test_a_write_refused_by_the_bucket_policy_exits_2_like_any_configuration_error(
    auth_s3: AuthS3, kotomi_db: Path, tmp_path: Path
) -> None:
    auth_s3.require_auth()
    url = f"s3://{BUCKET}/refused"
    env = aws(auth_s3, auth_s3.no_put, tmp_path)
    proc = run_cli("backup", "--db", str(kotomi_db), "--to", url, env=env)
    # HeadBucket and the manifest check pass (reads are allowed): the upload is refused.
    assert proc.returncode == 2, proc.stderr  # was 1: "upload to ... failed"
    line = one_line_error(proc)
    assert "access denied" in line and "AccessDenied" in line and url in line

    allowed = run_cli(
        "backup", "--db", str(kotomi_db), "--to", url, env=aws(auth_s3, auth_s3.writer, tmp_path)
    )
    assert allowed.returncode == 0, allowed.stderr  # the same setup with a key that may write


def test_credentials_refused_in_the_middle_of_a_backup_exit_2(
    auth_s3: AuthS3, kotomi_db: Path, tmp_path: Path
) -> None:
    """HeadBucket and the manifest check go through; from the upload on, the unknown key is
    refused (as when a key is revoked during a run)."""
    url = f"s3://{BUCKET}/revoked"
    env = aws(auth_s3, ("AKIAREVOKEDKEY000001", "gone"), tmp_path)
    auth_s3.require_auth(after=2)
    proc = run_cli("backup", "--db", str(kotomi_db), "--to", url, env=env)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert "InvalidAccessKeyId" in line and "the access key is not valid" in line

    auth_s3.require_auth()
    listed = run_cli("list", "--to", url, env=env)
    assert listed.returncode == 2, listed.stderr  # was 1
    assert "kotomi-backup: error: cannot list" in listed.stderr


def test_a_bad_session_token_names_every_cause_of_a_bare_400(
    auth_s3: AuthS3, kotomi_db: Path, tmp_path: Path
) -> None:
    auth_s3.require_auth()
    env = aws(auth_s3, auth_s3.writer, tmp_path, AWS_SESSION_TOKEN="not-a-session-token")
    proc = run_cli("backup", "--db", str(kotomi_db), "--to", f"s3://{BUCKET}/t", env=env)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert "HTTP 400 on HeadBucket" in line
    for cause in ("credentials", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"):
        assert cause in line, line
    assert "wrong region or endpoint URL?" not in line
    assert "not-a-session-token" not in proc.stderr


@pytest.mark.parametrize(
    ("remote", "refusal"),
    [
        ("s3", "status:403:SignatureDoesNotMatch"),
        ("s3", "status:400:ExpiredToken"),
        ("s3", "status:403:InvalidAccessKeyId"),
        ("s3", "status:403:RequestTimeTooSkewed"),  # a 403 of no listed kind: still refused
        ("gs", "status:401:Unauthorized"),
        ("gs", "status:403:Forbidden"),
    ],
    indirect=["remote"],
)
def test_a_refused_upload_is_a_configuration_error_on_s3_and_gcs(
    refusal: str, kotomi_db: Path, remote: tuple[str, FaultProxy]
) -> None:
    url, proxy = remote
    proxy.rules.append(Rule(is_upload, refusal))
    with pytest.raises(ConfigError) as caught:  # the CLI's exit 2
        run_backup(settings(kotomi_db, url))
    message = str(caught.value)
    assert message.startswith(f"upload of kotomi to {url} failed: "), message
    assert message.count(url) == 1, message  # was "upload to X failed: destination X: ..."
    assert len(proxy.faults()) == 1, "a refusal is not retried"


@pytest.mark.parametrize("remote", ["gs"], indirect=True)
def test_a_refused_delete_names_the_missing_right_and_changes_nothing(
    kotomi_db: Path, remote: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    """Issue 26's denied deletes, on GCS (S3's, inside a successful DeleteObjects answer, are
    tests/engine/keeper/test_policies.py): exit 2, the permission named, nothing removed."""
    from datetime import UTC, datetime, timedelta

    from kotomi_backup_dagster.engine.layout import list_backups
    from kotomi_backup_dagster.engine.prune import prune_store
    from kotomi_backup_dagster.engine.retention import RetentionPolicy
    from kotomi_backup_dagster.engine.stores import open_store
    from tests.engine.stores.conftest import backups_at

    url, proxy = remote
    now = datetime.now(UTC)
    backups_at(kotomi_db, url, tmp_path, [now - timedelta(days=d) for d in (0, 1, 2)])
    proxy.rules.append(Rule(lambda r: r.method == "DELETE", "status:403:Forbidden"))
    store = open_store(url)
    with pytest.raises(ConfigError) as refused:
        prune_store(store, "kotomi", RetentionPolicy(keep_last=1))
    assert "storage.objects.delete" in str(refused.value) and "\n" not in str(refused.value)
    assert len(list_backups(store, "kotomi").backups) == 3
