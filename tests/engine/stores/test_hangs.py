"""Stalled answers: a request waits what its work deserves, and a backup's deadline bounds
the whole of it (before: 120 s per attempt and six attempts, ~12 minutes for one request).

The fault proxy forwards nothing and answers nothing on a stalled request: the connection
stays open and silent, as behind a broken load balancer. No assertion here is about time:
each is about what gave up, how often it tried, and what it said."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from kotomi_backup_dagster.defs.backup.resources import KotomiBackupResource
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.staging import StagingArea
from kotomi_backup_dagster.engine.stores import RetryPolicy, Timeouts, open_store
from kotomi_backup_dagster.engine.stores.gcs import GCSStore
from kotomi_backup_dagster.engine.stores.s3 import MiB, S3Store
from tests.conftest import Proxies, one_line_error, run_cli, s3_client
from tests.engine.stores.conftest import is_upload
from tests.engine.stores.test_faults import gcs_client_at
from tests.servers import Endpoint, FaultProxy, Rule

DEADLINE_LINE = "gave up: the deadline of {} s (--deadline / KOTOMI_BACKUP_DEADLINE) passed"


def test_a_backup_whose_uploads_stall_gives_up_at_its_deadline_with_one_line(
    kotomi_db: Path, remote: tuple[str, FaultProxy]
) -> None:
    url, proxy = remote
    proxy.rules.append(Rule(is_upload, "stall"))
    env = {"KOTOMI_DB_PATH": str(kotomi_db), "KOTOMI_BACKUP_URL": url}
    if url.startswith("s3"):
        args = ["backup", "--deadline", "8"]
    else:
        args, env["KOTOMI_BACKUP_DEADLINE"] = ["backup"], "8"
    proc = run_cli(*args, env=env, timeout=300)  # before: six stalls of 120 s each
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc)
    assert DEADLINE_LINE.format(8) in line, line
    assert "last error: timed out" in line and line.endswith("then run the backup again")
    stalled = proxy.faults("stall")
    assert 1 <= len(stalled) <= 2, "retried past the deadline"  # the last try may be cut short


def small_store(scheme: str, endpoint: Endpoint, proxy: FaultProxy, bucket: str) -> Any:
    """A store with a 1 s wait for small requests and one retry, through the proxy."""
    timeouts = Timeouts(read=1.0)
    policy = RetryPolicy(attempts=2, base_delay=0.05)
    if scheme == "s3":
        return S3Store(s3_client(proxy.url), bucket, "p", retry=policy, timeouts=timeouts)
    return GCSStore(gcs_client_at(proxy.url), bucket, "p", retry=policy, timeouts=timeouts)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_stalled_small_request_costs_its_small_timeout_per_attempt(
    scheme: str, request: pytest.FixtureRequest, proxy_for: Proxies
) -> None:
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gs_bucket")
    endpoint = request.getfixturevalue("aws_env" if scheme == "s3" else "gcs_env")
    proxy = proxy_for(endpoint)
    proxy.rules.append(Rule(lambda r: True, "stall"))
    store = small_store(scheme, endpoint, proxy, bucket)
    with pytest.raises(
        BackupError, match=r"reading p/kotomi/x failed after 2 attempts \(timed out\)"
    ):
        store.get_bytes("kotomi/x")
    assert len(proxy.faults("stall")) == 2  # each attempt ended by its own read timeout


def test_an_upload_part_waits_in_proportion_to_its_size(
    s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    """What botocore is told to wait for each request of a multipart upload."""
    client = s3_client(aws_env.url)
    waits: list[tuple[str, float]] = []

    def record(request: Any, **_: Any) -> None:
        waits.append((request.method, request.context.get("read_timeout")))

    client.meta.events.register("before-send.s3", record)
    source = tmp_path / "big.db.zst"
    data = os.urandom(11 * MiB)
    source.write_bytes(data)
    timeouts = Timeouts(read=20.0, min_rate=1.0 * MiB)
    store = S3Store(client, s3_bucket, "p", part_size=5 * MiB, timeouts=timeouts)
    store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    parts = [w for m, w in waits if m == "PUT"]
    assert parts == [25.0, 25.0, 21.0]  # 20 s + 1 s per MiB: 5, 5 and 1 MiB
    assert waits[0] == ("POST", 20.0)  # starting the upload carries nothing
    assert waits[-1] == ("HEAD", 20.0)
    assert ("POST", 23.0) in waits  # completing: a second per part


def test_a_gcs_chunk_waits_in_proportion_to_its_size(
    gs_bucket: str, gcs_env: Endpoint, tmp_path: Path
) -> None:
    client = gcs_client_at(gcs_env.url)
    waits: list[tuple[str, Any]] = []
    send = client._http.request

    def spy(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        waits.append((kwargs.get("headers", {}).get("Content-Range", ""), kwargs["timeout"]))
        return send(method, url, *args, **kwargs)

    client._http.request = spy  # the library's session, observed: every request still goes
    source = tmp_path / "big.db.zst"
    data = os.urandom(1024 * 1024 + 99)
    source.write_bytes(data)
    store = GCSStore(
        client, gs_bucket, "p", chunk_size=512 * 1024, timeouts=Timeouts(read=20.0, connect=5.0)
    )
    store.put_file("k/big.db.zst", source, sha256=hashlib.sha256(data).hexdigest())
    chunks = [t for r, t in waits if r.startswith("bytes ") and "*" not in r]
    assert chunks == [(5.0, 20.5), (5.0, 20.5), (5.0, 20.0 + 99 / MiB)]


def test_the_deadline_is_a_setting_of_the_cli_the_environment_and_the_dagster_resource(
    kotomi_db: Path, tmp_path: Path
) -> None:
    assert BackupSettings.from_env({"KOTOMI_BACKUP_DEADLINE": "90"}).deadline == 90.0
    assert BackupSettings.from_env({}).deadline is None
    with pytest.raises(ConfigError, match="KOTOMI_BACKUP_DEADLINE 'soon'"):
        BackupSettings.from_env({"KOTOMI_BACKUP_DEADLINE": "soon"})
    resource = KotomiBackupResource(
        name="kotomi", db_path=str(kotomi_db), backup_url=str(tmp_path), deadline_seconds=45
    )
    assert resource.settings().deadline == 45.0
    bad = run_cli("backup", "--deadline", "0", "--db", str(kotomi_db), "--to", str(tmp_path))
    assert bad.returncode == 2 and "'0': give a positive number of seconds" in bad.stderr


def test_a_dagster_upload_that_stalls_fails_at_the_deadline_and_keeps_the_staged_backup(
    dagster_env: Path,
    s3_bucket: str,
    aws_env: Endpoint,
    proxy_for: Proxies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = proxy_for(aws_env)
    proxy.rules.append(Rule(is_upload, "stall"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("KOTOMI_BACKUP_URL", f"s3://{s3_bucket}/dagster")
    monkeypatch.setenv("KOTOMI_BACKUP_DEADLINE", "4")
    job = definitions_from_env().resolve_job_def("kotomi_backup")
    result = job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "kotomi__upload"
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert DEADLINE_LINE.format(4) in description
    assert 1 <= len(proxy.faults("stall")) <= 2
    assert open_store(f"s3://{s3_bucket}/dagster").list_children("kotomi") == []
    kept = StagingArea(dagster_env.parent / "staging", "kotomi").kept()
    assert len(kept) == 1, "the staged backup is kept for re-execution from failure"
