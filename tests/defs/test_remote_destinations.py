"""The backup job on S3 and GCS through Dagster's own resources, executed in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    instance_for_test,
    materialize,
    reconstructable,
)

from kotomi_backup_dagster.defs.backup.assets import build_backup_assets
from kotomi_backup_dagster.defs.backup.resources import (
    KotomiBackupResource,
    backup_resource_from_env,
)
from kotomi_backup_dagster.defs.databases import DatabaseSpec
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.defs.options import KotomiBackupOptions
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import LocalStore, open_store
from kotomi_backup_dagster.engine.stores.gcs import GCSStore
from kotomi_backup_dagster.engine.stores.s3 import S3Store
from tests.conftest import AWS_SECRET
from tests.engine.stores.conftest import check_download
from tests.servers import Endpoint, FaultProxy, Rule

KEY = "kotomi_backup_settings"


def kotomi_backup_job() -> JobDefinition:
    """Module-level, so Dagster can reconstruct the job for re-execution."""
    return definitions_from_env().resolve_job_def("kotomi_backup")


def step_keys(result: Any, kind: str) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == kind]


def test_materialize_with_the_s3_and_gcs_resources(
    kotomi_db: Path,
    s3_bucket: str,
    gs_bucket: str,
    aws_env: Endpoint,
    gcs_env: Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_aws.s3 import S3Resource
    from dagster_gcp.gcs import GCSResource

    # Only the resource knows where S3 is: the standard chain's endpoint leads nowhere.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    urls = [f"s3://{s3_bucket}/dagster", f"gs://{gs_bucket}/dagster", str(tmp_path / "local")]
    resource = KotomiBackupResource(
        name="kotomi",
        db_path=str(kotomi_db),
        backup_url=",".join(urls),
        staging_dir=str(tmp_path / "staging"),
        s3=S3Resource(endpoint_url=aws_env.url, max_attempts=0),
        gcs=GCSResource(),
    )
    stores = resource.stores()
    assert [type(s) for s in stores] == [S3Store, GCSStore, LocalStore]
    assert stores[0].client.meta.endpoint_url == aws_env.url  # type: ignore[attr-defined]

    spec = DatabaseSpec("kotomi")
    options = KotomiBackupOptions(databases=(spec,), backup=resource, destination_urls=tuple(urls))
    assets, checks = build_backup_assets(spec, options, KEY)
    result = materialize(
        [*assets, *checks],
        resources={KEY: resource},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    [upload] = result.asset_materializations_for_node("kotomi__upload")
    meta = upload.metadata
    assert meta["destinations_ok"].value == 3 and meta["destinations_failed"].value == 0
    assert meta["requests"].value == 3 + 2 + 2  # S3, GCS, local (file + manifest)
    table = str(meta["destinations"].value)
    assert all(url in table for url in urls)
    assert AWS_SECRET not in repr(meta)

    backup_id = meta["backup_id"].value
    for store in stores:
        [manifest] = list_backups(store, "kotomi").backups
        assert manifest.backup_id == backup_id
        check_download(store, manifest)


def test_a_cut_upload_fails_the_run_and_reexecution_lands_only_the_upload(
    kotomi_db: Path,
    s3_bucket: str,
    aws_env: Endpoint,
    proxy_for: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy: FaultProxy = proxy_for(aws_env)
    url = f"s3://{s3_bucket}/dagster"
    monkeypatch.setenv("KOTOMI_DB_PATH", str(kotomi_db))
    monkeypatch.setenv("KOTOMI_BACKUP_URL", url)
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # S3Resource(endpoint_url=EnvVar(...))
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "1")  # per request: 2 attempts
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "1")  # per step: 2 tries
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", "0.2")
    resource = backup_resource_from_env(DatabaseSpec("kotomi"))
    assert type(resource.s3).__name__ == "S3Resource" and resource.gcs is None

    proxy.rules.append(Rule(lambda r: r.method == "PUT", "drop"))  # every upload, for good
    job = reconstructable(kotomi_backup_job)
    with instance_for_test() as instance:
        first = execute_job(job, instance=instance, raise_on_error=False)
        assert not first.success
        assert step_keys(first, "STEP_UP_FOR_RETRY") == ["kotomi__upload"]
        assert step_keys(first, "STEP_FAILURE") == ["kotomi__upload"]
        assert len([r for r in proxy.requests() if r.method == "PUT"]) == 2 * 2
        [failure] = [e for e in first.all_events if e.event_type_value == "STEP_FAILURE"]
        description = failure.step_failure_data.user_failure_data.description
        assert "\n" not in description and url in description and "after 2 attempts" in description
        assert AWS_SECRET not in description
        assert list_backups(open_store(url), "kotomi").backups == []
        snapshot = first.asset_materializations_for_node("kotomi__snapshot")[0].metadata
        assert any(Path(snapshot["staging"].value).glob("kotomi.db.zst"))

        proxy.clear()
        options = ReexecutionOptions.from_failure(first.run_id, instance)
        second = execute_job(job, instance=instance, reexecution_options=options)
        assert second.success
        assert step_keys(second, "STEP_START") == ["kotomi__upload"]
        [manifest] = list_backups(open_store(url), "kotomi").backups
        assert manifest.backup_id == snapshot["backup_id"].value
        check_download(open_store(url), manifest)
        assert not Path(snapshot["staging"].value).exists()


def test_gs_destination_without_dagster_gcp_uses_the_standard_chain(
    kotomi_db: Path,
    gs_bucket: str,
    gcs_env: Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image leaves out dagster-gcp (the extra `gcp`): gs:// still backs up through Dagster."""
    import sys

    monkeypatch.setitem(sys.modules, "dagster_gcp", None)  # `import dagster_gcp` now fails
    monkeypatch.setitem(sys.modules, "dagster_gcp.gcs", None)
    url = f"gs://{gs_bucket}/dagster"
    monkeypatch.setenv("KOTOMI_DB_PATH", str(kotomi_db))
    monkeypatch.setenv("KOTOMI_BACKUP_URL", url)
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    resource = backup_resource_from_env(DatabaseSpec("kotomi"))
    assert resource.gcs is None

    # In process: a subprocess would import the real dagster_gcp again.
    result = kotomi_backup_job().execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success
    [manifest] = list_backups(open_store(url), "kotomi").backups
    check_download(open_store(url), manifest)
