"""docker-compose.yml run for real: the image built from the Dockerfile, PostgreSQL, the code
server, the webserver and the daemon under a Docker engine, Kotomi's stand-in writing to its
volume the whole time, driven through the webserver's GraphQL API like the UI drives it.

The tests run in file order and share one stack (a user's journey)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import timed
from tests.deploy.docker import Engine
from tests.deploy.stack import DB_IN_DAGSTER, Stack, bring_up, wait_for

# The first test here also waits for the images to build (several minutes on 2 busy cores).
pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def stack(engine: Engine, images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("compose") / "compose.log"
    with timed("compose up (default instance)"):
        started = bring_up(
            engine,
            "kotomi-backup",
            docker_runs=False,
            # The daemon fires the backup schedule every minute, so a tick is seen here; the
            # 15-minute paged one is off (its runs would land at random in the journey).
            env={"KOTOMI_BACKUP_CRON": "* * * * *", "KOTOMI_BACKUP_FREQUENT_CRON": "off"},
            logs=logs,
        )
        stack = started.__enter__()
    try:
        with timed("journey (default instance)"):
            yield stack
    finally:
        started.__exit__(None, None, None)


def backups(stack: Stack) -> list[dict[str, Any]]:
    out = stack.exec("user_code", "kotomi-backup", "list", "--json")
    listing: dict[str, Any] = json.loads(out)
    found: list[dict[str, Any]] = listing["destinations"][0]["backups"]
    return found


def test_the_services_are_healthy_and_run_as_kotomis_user(stack: Stack) -> None:
    for service in ("user_code", "webserver"):
        assert stack.healthy(service) == "healthy"
    # The image's probe of the code server agrees with Dagster's own command.
    port = stack.compose.env["TEST_GRPC_PORT"]
    check = ["dagster", "api", "grpc-health-check", "-p", port]
    assert "successful" in stack.exec("user_code", *check)
    for service in ("user_code", "webserver", "daemon"):
        uid = stack.exec(service, "id", "-u").strip()
        assert uid == "1000", service


def test_a_backup_while_kotomi_writes(stack: Stack) -> None:
    before = len(stack.kotomi.comments())
    run = stack.client.wait_run(stack.client.launch("kotomi_backup"))
    assert run["status"] == "SUCCESS", run
    assert backups(stack)
    assert len(stack.kotomi.comments()) > before, "Kotomi's stand-in stopped writing"
    owners = stack.on_volume("stat", "-c", "%u", "/b/kotomi", volume="kotomi-backups", at="/b")
    assert owners.strip() == "1000"


def test_a_failed_upload_alerts_and_reexecutes_from_failure(stack: Stack) -> None:
    client = stack.client
    with stack.broken_destination():
        failed = client.wait_run(client.launch("kotomi_backup"), timeout=300)
    assert failed["status"] == "FAILURE"
    steps = {s["stepKey"]: s["status"] for s in failed["stepStats"]}
    assert steps["kotomi__upload"] == "FAILURE"
    assert steps["kotomi__snapshot"] == steps["kotomi__archive"] == "SUCCESS"

    # The daemon's run-failure sensor posts to the webhook on the host's loopback.
    posts = wait_for(
        lambda: [p for p in stack.receiver.posts if failed["runId"] in json.dumps(p)],
        180,
        "the failure alert",
    )
    text = json.dumps(posts[0])
    assert "upload" in text and f"/runs/{failed['runId']}" in text

    again = client.wait_run(client.reexecute_from_failure(failed["runId"]), timeout=300)
    assert again["status"] == "SUCCESS", again
    ran = {s["stepKey"] for s in again["stepStats"] if s["status"] == "SUCCESS"}
    assert ran == {"kotomi__upload"}


def test_the_daemon_fires_the_schedule_and_the_prune_sensor(stack: Stack) -> None:
    def runs_tagged(tag: str) -> list[dict[str, Any]]:
        return [r for r in stack.client.runs() if any(t["key"] == tag for t in r["tags"])]

    scheduled = wait_for(lambda: runs_tagged("dagster/schedule_name"), 150, "a scheduled run")
    assert scheduled[0]["jobName"] == "kotomi_backup"
    pruned = wait_for(
        lambda: [r for r in runs_tagged("dagster/sensor_name") if r["status"] == "SUCCESS"],
        180,
        "a successful prune run launched by the sensor",
    )
    assert {r["jobName"] for r in pruned} == {"kotomi_prune"}


def test_every_backup_restores_with_its_rows_in_commit_order(stack: Stack) -> None:
    stack.kotomi.stop()
    committed = stack.kotomi.comments()
    last = stack.client.wait_run(stack.client.launch("kotomi_backup"))
    assert last["status"] == "SUCCESS", last

    rows = stack.backup_rows()
    written = set(committed)
    counts = []
    for backup_id in sorted(rows):
        mine = [c for c in rows[backup_id] if c in written]
        # Each backup holds the stand-in's comments up to some commit, none missing, in order.
        assert mine == committed[: len(mine)], backup_id
        counts.append(len(mine))
    assert counts == sorted(counts)
    assert counts[-1] == len(committed), "the backup after Kotomi stopped misses commits"
    assert any(0 < n < len(committed) for n in counts), "no backup was taken during writes"
    assert len(rows) >= 2  # retention (daily, weekly...) prunes the others of the day


def test_restore_job_into_kotomis_volume(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    oldest = min(backups(stack), key=lambda m: m["backup_id"])
    config = {
        "ops": {
            "choose_backup_to_restore": {
                # The live file: replacing it needs its name repeated.
                "config": {"database": "kotomi", "backup": oldest["backup_id"], "confirm": "kotomi"}
            }
        }
    }
    # Kotomi runs: its own container holds the file open, and the restore refuses.
    stack.kotomi.start()
    refused = client.wait_run(client.launch("restore_job", config))
    assert refused["status"] == "FAILURE"
    messages = " ".join(m for _, m in client.messages(refused["runId"]))
    assert f"{DB_IN_DAGSTER} is in use" in messages

    stack.kotomi.stop()
    restored = client.wait_run(client.launch("restore_job", config))
    assert restored["status"] == "SUCCESS", restored
    listing = stack.on_volume("sh", "-c", "cd /app/data && stat -c '%n %u:%g' kotomi.db* && "
                              "sha256sum kotomi.db")  # fmt: skip
    owners = dict(line.split() for line in listing.splitlines()[:-1])
    assert owners["kotomi.db"] == "1000:1000"
    assert "kotomi.db-wal" not in owners and "kotomi.db-shm" not in owners
    assert any(name.startswith("kotomi.db.before-restore-") for name in owners)
    assert listing.splitlines()[-1].split()[0] == oldest["db_sha256"]

    # Kotomi starts again on the restored file, which it can write as uid 1000.
    written = len(stack.kotomi.comments())
    stack.kotomi.start()
    wait_for(lambda: len(stack.kotomi.comments()) > written, 60, "a comment after the restore")


def test_the_keeper_service_prunes_the_writers_backups_and_takes_none(stack: Stack) -> None:
    """docker-compose.yml's second role (docs/immutability.md), from the same image: the
    keeper reaches the writer's destination, prunes it, and refuses the writer's work."""
    keeper = ("run", "--rm", "-T", "keeper")
    refused = stack.compose(*keeper, "kotomi-backup", "backup", "--db", "/none.db", check=False)
    assert "writer's work" in refused, refused
    before = {b["backup_id"] for b in backups(stack)}
    out = stack.compose(*keeper, "kotomi-backup", "prune", "--json")
    [dest] = json.loads(out[out.index("{") :])["destinations"]
    kept = {b["backup_id"] for b in dest["backups"] if b["keep"]}
    assert kept and kept <= before
    assert {b["backup_id"] for b in backups(stack)} == before - set(dest["removed"])


def test_every_container_is_on_the_host_network(stack: Stack, engine: Engine) -> None:
    ids = engine.docker("ps", "-aq").split()
    assert len(ids) >= 5  # postgres, user_code, daemon, webserver, Kotomi
    for container in engine.inspect("container", *ids):
        assert container["HostConfig"]["NetworkMode"] == "host", container["Name"]
        for network in container["NetworkSettings"]["Networks"].values():
            assert not network["IPAddress"], container["Name"]
    names = set(engine.docker("network", "ls", "--format", "{{.Name}}").split())
    assert names == {"host", "none"}  # no bridge network exists
