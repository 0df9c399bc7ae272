"""The health sensor over real backups (engine `run_backup`) and real receivers:
stale once across ticks then "recovered", size drop, unlistable destination, failed drill,
and the backup_catalog observations."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    FloatMetadataValue,
    IntMetadataValue,
    MarkdownMetadataValue,
    build_sensor_context,
    instance_for_test,
)

from kotomi_backup_dagster.defs.databases import DatabaseSpec
from kotomi_backup_dagster.defs.factory import build_kotomi_backup_defs, definitions_from_env
from kotomi_backup_dagster.defs.retention.resources import RetentionPolicyResource
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.layout import DrillRecord, write_drill
from kotomi_backup_dagster.engine.manifest import Manifest, new_backup_id, rfc3339
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore

from .conftest import (
    SmtpServer,
    WebhookReceiver,
    alert_env,
    assert_no_secret,
    backup_env,
    unreachable_s3,
)

SENSOR = "kotomi_backup_health"
CATALOG = AssetKey(["kotomi", "backup_catalog"])


def code_location() -> Definitions:
    return definitions_from_env()


def backup(dest: Path | None = None) -> Manifest:
    settings = BackupSettings.from_env()
    if dest is not None:
        settings = replace(settings, urls=(str(dest),))
    return run_backup(settings).manifest


def make_old(dest: Path, manifest: Manifest, hours: float) -> Manifest:
    """Move a backup `hours` into the past: a new id, directory and created_at."""
    when = manifest.created - timedelta(hours=hours)
    backup_id = new_backup_id(when)
    (dest / "kotomi" / manifest.backup_id).rename(dest / "kotomi" / backup_id)
    archive_name = manifest.archive.key.rsplit("/", 1)[-1]
    old = replace(
        manifest,
        backup_id=backup_id,
        created_at=rfc3339(when),
        archive=replace(manifest.archive, key=f"kotomi/{backup_id}/{archive_name}"),
    )
    (dest / "kotomi" / backup_id / "manifest.json").write_bytes(old.to_json())
    return old


class Ticker:
    """Evaluates the health sensor like the daemon: only the cursor survives between ticks;
    asset events are stored the way the daemon stores them."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.cursor: str | None = None

    def __call__(self) -> list[Any]:
        defs = code_location()  # rebuilt each tick: a restart loses nothing but the cursor
        sensor = defs.resolve_sensor_def(SENSOR)
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=defs.resources
        ) as context:
            result = sensor.evaluate_tick(context)
        assert not result.run_requests
        self.cursor = result.cursor
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        return list(result.asset_events)


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    kotomi_db: Path,
    tmp_path: Path,
    webhook: WebhookReceiver,
    smtp_server: SmtpServer,
) -> Path:
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=smtp_server.port)
    return backup_env(monkeypatch, kotomi_db, tmp_path)


def alerts(webhook: WebhookReceiver) -> list[dict[str, Any]]:
    return [p.body["alert"] for p in webhook.posts]


def test_stale_backup_alerts_once_across_three_ticks_and_recovers_once(
    env: Path, webhook: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    assert code_location().resolve_sensor_def(SENSOR).default_status == DefaultSensorStatus.RUNNING
    old = make_old(env, backup(), hours=48)
    with instance_for_test() as instance:
        tick = Ticker(instance)
        observed = tick()
        for _ in range(2):
            assert tick() == [], "catalog unchanged and observed < 1 h ago: no new observation"
        assert len(webhook.posts) == 1 and len(smtp_server.messages) == 1
        (stale,) = alerts(webhook)
        assert stale["status"] == "firing" and stale["kind"] == "stale"
        assert stale["what"] == "stale backup"
        assert stale["destination"] == f"file://{env}"
        # The default cadence backs up every 15 minutes: stale after 2 h 15 min.
        assert f"newest backup {old.backup_id} is 48 h old (limit 3 h)" in stale["error"]
        assert "kotomi-backup backup" in stale["next_step"]
        assert smtp_server.messages[0]["Subject"] == "[kotomi-backup] FAILED kotomi: stale backup"

        (observation,) = observed
        meta = observation.metadata
        assert observation.asset_key == CATALOG
        assert meta["backup_count"].value == 1
        age = meta["newest_age_hours"]
        assert isinstance(age, FloatMetadataValue) and age.value is not None
        assert 47.9 < age.value < 48.5

        fresh = backup()
        again = tick()
        tick()
        assert len(webhook.posts) == 2 and len(smtp_server.messages) == 2
        recovered = alerts(webhook)[1]
        assert recovered["status"] == "recovered" and recovered["kind"] == "stale"
        # A fresh backup's age reads in seconds (not "0.0 h")
        assert re.fullmatch(rf"newest backup {fresh.backup_id} is \d+ s old", recovered["error"])
        assert smtp_server.messages[1]["Subject"].startswith("[kotomi-backup] RECOVERED kotomi")

        assert len(again) == 1, "a new backup changes the catalog: observed at once"
        stored = instance.fetch_observations(CATALOG, limit=10).records
        assert len(stored) == 2
        latest = stored[0].asset_observation
        assert latest is not None
        assert isinstance(latest.metadata["backup_count"], IntMetadataValue)
        assert latest.metadata["backup_count"].value == 2
        assert isinstance(latest.metadata["newest_age_hours"], FloatMetadataValue)
        table = latest.metadata["backups"]
        assert isinstance(table, MarkdownMetadataValue)
        assert fresh.backup_id in table.value and old.backup_id in table.value
        assert "never drilled" in table.value and "daily " in table.value  # tiers
        assert_no_secret([p.body["text"] for p in webhook.posts] + smtp_server.texts())


def test_size_drop_alert_fires_once_on_a_halved_database(
    env: Path, kotomi_db: Path, webhook: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    before = make_old(env, backup(), hours=24)
    conn = sqlite3.connect(kotomi_db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
    for table in tables:
        conn.execute(f'DELETE FROM "{table}" WHERE rowid % 10 < 6')  # 60% of every table
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    after = backup()
    assert after.db_size < before.db_size / 2
    with instance_for_test() as instance:
        tick = Ticker(instance)
        for _ in range(3):
            tick()
    (drop,) = alerts(webhook)
    assert drop["kind"] == "size_drop"
    assert drop["what"] == "backup much smaller than the previous one"
    assert after.backup_id in drop["error"] and before.backup_id in drop["error"]
    assert drop["details"]["rows comments"].endswith(f"-> {after.tables['comments']}")
    assert len(smtp_server.messages) == 1


def test_unlistable_destination_and_failed_drill_alert_once_and_recover(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: WebhookReceiver
) -> None:
    made = backup()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kotomi").symlink_to(
        broken / "kotomi"
    )  # a symlink below the root: refused, even as root
    monkeypatch.setenv("KOTOMI_BACKUP_URL", f"{env},{broken}")
    record = DrillRecord(
        backup_id=made.backup_id,
        drilled_at=rfc3339(datetime.now(UTC)),
        ok=False,
        problems=["integrity_check: page 7 is never used"],
        rto_seconds=0.4,
        db_size=made.db_size,
        tool_version="0.1.0",
        checks={"integrity": False},
    )
    write_drill(LocalStore(env), "kotomi", record)
    with instance_for_test() as instance:
        tick = Ticker(instance)
        (observed,) = tick()
        tick()
        assert sorted(a["kind"] for a in alerts(webhook)) == ["drill_failed", "unlistable"]
        unlistable = next(a for a in alerts(webhook) if a["kind"] == "unlistable")
        assert unlistable["destination"] == f"file://{broken}"
        assert "is a symlink" in unlistable["error"]
        failed = next(a for a in alerts(webhook) if a["kind"] == "drill_failed")
        assert "integrity_check: page 7 is never used" in failed["error"]
        assert observed.metadata["destinations_unlistable"].value == 1
        assert observed.metadata["drills_failed"].value == 1

        (broken / "kotomi").unlink()  # the destination lists again (and is empty)
        write_drill(
            LocalStore(env),
            "kotomi",
            replace(
                record,
                ok=True,
                problems=[],
                drilled_at=rfc3339(datetime.now(UTC) + timedelta(seconds=1)),
            ),
        )
        tick()
        tick()
        later = alerts(webhook)[2:]
        assert sorted((a["status"], a["kind"]) for a in later) == [
            ("firing", "stale"),  # the repaired destination holds no backup yet
            ("recovered", "drill_failed"),
            ("recovered", "unlistable"),
        ]


def test_backup_catalog_asset_observes_with_metadata_that_plots(env: Path) -> None:
    made = backup()
    defs = code_location()
    graph = defs.resolve_asset_graph()
    # The catalog observes the stores, downstream of everything that changes them.
    assert graph.get(CATALOG).is_observable
    assert graph.get(CATALOG).parent_keys == {
        AssetKey(["kotomi", s]) for s in ("upload", "prune", "restore_drill", "restore_test")
    }
    with instance_for_test() as instance:
        # What the UI's "Observe" button runs.
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=[CATALOG], instance=instance
        )
        assert result.success
        record = instance.fetch_observations(CATALOG, limit=1).records[0]
        observation = record.asset_observation
        assert observation is not None
        meta = observation.metadata
        assert (
            isinstance(meta["backup_count"], IntMetadataValue) and meta["backup_count"].value == 1
        )
        assert isinstance(meta["total_bytes"], IntMetadataValue)
        assert meta["total_bytes"].value == made.archive.size
        assert isinstance(meta["newest_age_hours"], FloatMetadataValue)
        assert isinstance(meta["backups"], MarkdownMetadataValue)
        assert f"`{made.backup_id}`" in meta["backups"].value


def test_the_catalog_tiers_follow_the_retention_resource_not_the_environment(env: Path) -> None:
    """A policy given to the code location (here keep the newest backup only) decides the
    catalog's tiers, as it decides prune; the environment's defaults (7 daily...) would keep
    the older backup as "oldest daily"."""
    older = make_old(env, backup(), hours=2)
    newest = backup()
    defs = build_kotomi_backup_defs(
        [DatabaseSpec("kotomi")],
        destinations=[str(env)],
        retention=RetentionPolicyResource(
            keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0
        ),
    )
    with instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=[CATALOG], instance=instance
        )
        assert result.success
        observation = instance.fetch_observations(CATALOG, limit=1).records[0].asset_observation
        assert observation is not None
        rows = observation.metadata["backups"].value.splitlines()
    (newest_row,) = [r for r in rows if newest.backup_id in r]
    (older_row,) = [r for r in rows if older.backup_id in r]
    assert "| newest, last |" in newest_row
    assert "pruned at the next prune" in older_row


def test_a_backup_whose_archive_vanished_alerts_once_and_recovers_when_it_is_back(
    env: Path, webhook: WebhookReceiver
) -> None:
    older = make_old(env, backup(), hours=2)
    newest = backup()
    archive = env / newest.archive.key
    aside = env.parent / "aside.zst"
    archive.rename(aside)  # deleted behind the tool's back; the manifest stays
    with instance_for_test() as instance:
        tick = Ticker(instance)
        (observed,) = tick()
        tick()
        (damaged,) = alerts(webhook)
        assert damaged["kind"] == "backup_damaged" and damaged["status"] == "firing"
        assert damaged["what"] == "backup objects missing or changed"
        assert damaged["error"] == f"backup {newest.backup_id}: objects missing: kotomi.db.zst"
        assert damaged["details"]["damaged_backups"] == "1"
        assert damaged["destination"] == f"file://{env}"
        assert "fill no retention slot" in damaged["next_step"]
        assert observed.metadata["backups_damaged"].value == 1
        table = observed.metadata["backups"].value
        assert f"`{newest.backup_id}`" in table and "**DAMAGED**" in table
        assert older.backup_id in table

        aside.rename(archive)  # put back: the same bytes, as the manifest says
        tick()
        tick()
        assert [(a["status"], a["kind"]) for a in alerts(webhook)] == [
            ("firing", "backup_damaged"),
            ("recovered", "backup_damaged"),
        ]
        assert alerts(webhook)[1]["error"] == (
            f"every backup at file://{env} has its objects as its manifest says"
        )


def test_an_unreachable_destination_is_named_once_with_the_network_as_next_step(
    env: Path, monkeypatch: pytest.MonkeyPatch, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    """A refused connection is a question of network and endpoint, not of permissions."""
    unreachable_s3(monkeypatch, tmp_path)
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "0")
    with instance_for_test() as instance:
        Ticker(instance)()
    (unlistable,) = alerts(webhook)
    url = "s3://offsite-bucket/prod"
    assert unlistable["kind"] == "unlistable" and unlistable["destination"] == url
    error = unlistable["error"]
    assert error.count(url) == 1, error  # was: "listing s3://..: BackupError: s3://..: ..."
    assert "Error:" not in error and "could not connect to the endpoint" in error
    assert "reachable" in unlistable["next_step"]
    assert "permissions" not in unlistable["next_step"]
    assert f"{url}: {url}" not in webhook.posts[0].body["text"]
