"""Dagster's conventions: metadata on every asset and job, freshness policies, one pool per
database on every step, runs tagged with their database at launch, configuration errors at
load (one line), and the dg project."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterRunStatus, instance_for_test

from kotomi_backup_dagster.defs.databases import DATABASE_TAG
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.defs.run_coordinator import DatabaseRunCoordinator, database_tag_for
from kotomi_backup_dagster.engine.errors import ConfigError
from tests.conftest import REPO

TWO = "blog=/data/blog.db,kotomi=/data/kotomi.db"


def test_every_asset_has_kinds_owners_and_a_description_and_every_job_a_description(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", TWO)
    monkeypatch.setenv("KOTOMI_BACKUP_URL", "/backups,s3://bucket/kotomi,gs://bucket/kotomi")
    defs = definitions_from_env()
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) == 2 * 7
    for key in keys:
        node = graph.get(key)
        assert node.kinds and node.owners == ["team:kotomi-ops"], key
        assert node.description and len(node.description) > 30, key
        assert node.group_name == f"{key.path[0]}_backup", key  # one lineage per database
    assert graph.get(AssetKey(["blog", "upload"])).kinds == {"file", "s3", "gcs"}
    assert graph.get(AssetKey(["blog", "snapshot"])).kinds == {"sqlite"}
    # upload -> prune, restore_drill, restore_test; the catalog observes the stores.
    assert graph.get(AssetKey(["blog", "upload"])).child_keys == {
        AssetKey(["blog", s]) for s in ("prune", "restore_drill", "restore_test", "backup_catalog")
    }
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert job.description and len(job.description) > 30, job.name


def test_freshness_policies_follow_the_cadence_and_the_health_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = definitions_from_env().resolve_asset_graph()
    upload = graph.get(AssetKey(["kotomi", "upload"])).freshness_policy
    drill = graph.get(AssetKey(["kotomi", "restore_drill"])).freshness_policy
    # A backup every 15 minutes by default: overdue after the interval + 2 h, in whole hours.
    assert upload is not None and upload.fail_window.to_timedelta() == timedelta(hours=3)
    assert drill is not None and drill.fail_window.to_timedelta() == timedelta(days=8)
    monkeypatch.setenv("KOTOMI_BACKUP_FREQUENT_CRON", "off")  # the daily backup alone
    graph = definitions_from_env().resolve_asset_graph()
    upload = graph.get(AssetKey(["kotomi", "upload"])).freshness_policy
    assert upload is not None and upload.fail_window.to_timedelta() == timedelta(hours=36)
    monkeypatch.setenv("KOTOMI_BACKUP_KEEP_HOURLY", "24")  # hourly backups
    monkeypatch.setenv("KOTOMI_BACKUP_DRILL_OVERDUE_DAYS", "0")  # drill freshness off
    graph = definitions_from_env().resolve_asset_graph()
    upload = graph.get(AssetKey(["kotomi", "upload"])).freshness_policy
    assert upload is not None and upload.fail_window.to_timedelta() == timedelta(hours=3)
    assert graph.get(AssetKey(["kotomi", "restore_drill"])).freshness_policy is None


def test_every_run_holds_its_databases_pool_and_gets_its_database_tag_at_launch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", TWO)
    defs = definitions_from_env()
    settings = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    deployed = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    for config in (settings, deployed):
        assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
        assert config["run_coordinator"]["class"] == "DatabaseRunCoordinator"
    with instance_for_test(overrides=settings) as instance:
        assert isinstance(instance.run_coordinator, DatabaseRunCoordinator)
        everything = defs.resolve_implicit_global_asset_job_def()
        # "Materialize" on one asset in the UI: the database's pool, and its tag at launch.
        one = instance.create_run_for_job(
            everything, asset_selection=frozenset({AssetKey(["blog", "upload"])})
        )
        assert one.run_op_concurrency is not None
        assert one.run_op_concurrency.all_pools == {"kotomi_backup_blog"}
        assert database_tag_for(one) == {DATABASE_TAG: "blog"}
        # "Materialize all": both pools (a run holds them all), no single database's tag.
        both = instance.create_run_for_job(everything)
        assert both.run_op_concurrency is not None
        assert both.run_op_concurrency.all_pools == {"kotomi_backup_blog", "kotomi_backup_kotomi"}
        assert database_tag_for(both) == {"kotomi_backup/databases": "blog, kotomi"}
        # A job launched whole from the Launchpad: its steps' pools name the database.
        monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", "docs-site=/data/docs.db")
        whole = instance.create_run_for_job(definitions_from_env().resolve_job_def("kotomi_prune"))
        assert database_tag_for(whole) == {DATABASE_TAG: "docs-site"}
        # The restore Launchpad: the database of its config.
        restore = instance.create_run_for_job(
            defs.resolve_job_def("restore_job"),
            run_config={"ops": {"choose_backup_to_restore": {"config": {"database": "kotomi"}}}},
            status=DagsterRunStatus.NOT_STARTED,
        )
        assert database_tag_for(restore) == {DATABASE_TAG: "kotomi"}
    for job in ("kotomi_backup", "kotomi_prune", "kotomi_restore_drill", "kotomi_restore_test"):
        for node in defs.resolve_job_def(job).nodes_in_topological_order:
            assert node.definition.pool == f"kotomi_backup_{node.name.split('__')[0]}", node.name


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KOTOMI_BACKUP_VERIFY", "xyz", "KOTOMI_BACKUP_VERIFY 'xyz': use quick or full"),
        ("KOTOMI_BACKUP_KEEP_DAILY", "abc", "KOTOMI_BACKUP_KEEP_DAILY 'abc': give a whole number"),
        ("KOTOMI_BACKUP_FORMAT", "zip", "KOTOMI_BACKUP_FORMAT 'zip': use full or paged"),
        ("KOTOMI_BACKUP_CRON", "every day", "KOTOMI_BACKUP_CRON 'every day': give a cron"),
        ("KOTOMI_BACKUP_RETRIES", "many", "KOTOMI_BACKUP_RETRIES 'many': give a whole number"),
        ("KOTOMI_BACKUP_STALE_HOURS", "-3", "KOTOMI_BACKUP_STALE_HOURS '-3': give a number"),
        ("KOTOMI_BACKUP_DATABASES", "blog", "entry 'blog': use name=/path/to/db.sqlite"),
        # Checked at load since the settings table; before, at the first run that used them.
        ("KOTOMI_BACKUP_S3_SSE", "yes", "KOTOMI_BACKUP_S3_SSE 'yes': use AES256, aws:kms"),
        ("KOTOMI_BACKUP_SMTP_PORT", "0", "KOTOMI_BACKUP_SMTP_PORT '0': give a port number"),
        ("KOTOMI_BACKUP_KEEP_STAGED", "0", "KOTOMI_BACKUP_KEEP_STAGED '0': give a whole number"),
    ],
)
def test_a_bad_setting_fails_the_load_with_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        definitions_from_env()
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def dg(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    venv = Path(sys.executable).parent.parent
    return subprocess.run(
        [str(venv / "bin" / "dg"), *args],
        cwd=cwd,
        env={**os.environ, "VIRTUAL_ENV": str(venv), "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_dg_check_defs_passes_and_refuses_a_bad_setting_with_its_line() -> None:
    ok = dg("check", "defs")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "All definitions loaded successfully" in ok.stdout + ok.stderr
    assert "SupersessionWarning" not in ok.stdout + ok.stderr
    bad = dg("check", "defs", env={"KOTOMI_BACKUP_KEEP_DAILY": "abc"})
    assert bad.returncode != 0
    assert (
        "ConfigError: KOTOMI_BACKUP_KEEP_DAILY 'abc': give a whole number"
        in bad.stdout + bad.stderr
    )


@pytest.mark.slow
def test_dg_check_defs_warns_of_a_misspelt_variable_as_the_cli_does() -> None:
    # Without its final S the recipients are no setting: every backup would go out plain.
    loaded = dg("check", "defs", env={"KOTOMI_BACKUP_AGE_RECIPIENT": "age1qqqq"})
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    warned = [line for line in (loaded.stdout + loaded.stderr).splitlines() if "WARNING" in line]
    assert len(warned) == 1, loaded.stdout + loaded.stderr
    assert warned[0].endswith(
        "KOTOMI_BACKUP_AGE_RECIPIENT is not a setting and is ignored: did you mean "
        "KOTOMI_BACKUP_AGE_RECIPIENTS?"
    ), warned


def test_a_copied_database_is_defined_exactly_as_if_it_were_built_by_the_decorators() -> None:
    """Databases after the first are copies of its stages (replicate.py, for load time): the
    snapshot Dagster serves for them equals the one of the same database built first."""
    import json

    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from kotomi_backup_dagster import build_kotomi_backup_defs

    def served(databases: dict[str, str | None]) -> dict[str, object]:
        defs = build_kotomi_backup_defs(databases, destinations=["/b", "s3://b/k"])
        snap = RepositorySnap.from_def(defs.get_repository_def())
        nodes = [*snap.asset_nodes, *(snap.asset_check_nodes or [])]
        return {
            serialize_value(getattr(n, "key", None) or n.asset_key): json.loads(serialize_value(n))
            for n in nodes
            if (getattr(n, "asset_key", None) or n.key.asset_key).path[0] == "docs-site"
        }

    alone = served({"docs-site": "/x/docs.db"})
    copied = served({"kotomi": "/x/kotomi.db", "docs-site": "/x/docs.db"})
    assert len(alone) == 7 + 9 and copied == alone
