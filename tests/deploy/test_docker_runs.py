"""Runs in containers of their own: docker-compose.yml plus deploy/docker-runs/compose.yml, where
Dagster's DockerRunLauncher starts each run as a container of the project image with Kotomi's
volume mounted (the shape of Kubernetes' K8sRunLauncher). Driven through GraphQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.conftest import timed
from tests.deploy.docker import Engine
from tests.deploy.stack import Stack, bring_up, wait_for

# The first test here also waits for the images to build (several minutes on 2 busy cores).
pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def stack(engine: Engine, images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("docker-runs") / "compose.log"
    with timed("compose up (runs in containers)"):
        started = bring_up(
            engine,
            "kotomi-backup-runs",
            docker_runs=True,
            env={"KOTOMI_BACKUP_FREQUENT_CRON": "off"},  # no 15-minute runs in the journey
            logs=logs,
        )
        stack = started.__enter__()
    try:
        with timed("journey (runs in containers)"):
            yield stack
    finally:
        started.__exit__(None, None, None)


def run_container(stack: Stack, run: dict[str, Any]) -> str:
    """The container the launcher started for a run (its tag, checked against the run's log),
    which is none of the stack's and is gone once the run ended (auto_remove)."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    container = tags["docker/container_id"]
    messages = [m for _, m in stack.client.messages(run["runId"])]
    assert any(f"Launching run in a new container {container}" in m for m in messages)
    stack_containers = {
        stack.compose.container(s) for s in ("postgres", "user_code", "webserver", "daemon")
    }
    assert not any(container.startswith(c) for c in stack_containers)
    wait_for(
        lambda: not stack.engine.docker("ps", "-aq", "--filter", f"id={container}").strip(),
        60,
        "the run's container removed",
    )
    return container


def test_a_backup_runs_in_a_container_of_its_own(stack: Stack, engine: Engine) -> None:
    run = stack.client.wait_run(stack.client.launch("kotomi_backup"))
    assert run["status"] == "SUCCESS", run
    run_container(stack, run)
    listing = json.loads(stack.exec("user_code", "kotomi-backup", "list", "--json"))
    assert len(listing["destinations"][0]["backups"]) == 1


def test_reexecute_from_failure_in_a_new_container_uploads_the_failed_runs_archive(
    stack: Stack, engine: Engine
) -> None:
    with stack.broken_destination():
        failed = stack.client.wait_run(stack.client.launch("kotomi_backup"), timeout=300)
    assert failed["status"] == "FAILURE"
    again = stack.client.wait_run(stack.client.reexecute_from_failure(failed["runId"]))
    assert again["status"] == "SUCCESS", again
    assert {s["stepKey"] for s in again["stepStats"]} == {"kotomi__upload"}
    # Two containers, gone: the upload found the first one's outputs on the shared storage.
    assert run_container(stack, again) != run_container(stack, failed)
    listing = json.loads(stack.exec("user_code", "kotomi-backup", "list", "--json"))
    assert len(listing["destinations"][0]["backups"]) == 2


def test_a_restore_runs_in_a_container_of_its_own_into_kotomis_volume(
    stack: Stack, engine: Engine
) -> None:
    target = "/data/kotomi-restored.db"
    config = {
        "ops": {
            "choose_backup_to_restore": {
                "config": {"database": "kotomi", "backup": "latest", "target_path": target}
            }
        }
    }
    # The sensor launches a prune after the uploads above, likely while this restore starts:
    # the queue holds one of the two until the other has finished, and both succeed.
    run = stack.client.wait_run(stack.client.launch("restore_job", config))
    assert run["status"] == "SUCCESS", stack.client.step_failures(run["runId"])
    run_container(stack, run)
    listing = json.loads(stack.exec("user_code", "kotomi-backup", "list", "--json"))
    newest = max(listing["destinations"][0]["backups"], key=lambda m: m["backup_id"])
    out = stack.on_volume(
        "sh", "-c", "stat -c '%u:%g' /app/data/kotomi-restored.db && "
        "sha256sum /app/data/kotomi-restored.db",
    )  # fmt: skip
    owner, digest = out.split()[0], out.split()[1]
    assert owner == "1000:1000"
    assert digest == newest["db_sha256"]


def test_no_network_but_the_hosts(engine: Engine) -> None:
    # With no bridge and no other network, no container (a run's included) has an address.
    names = set(engine.docker("network", "ls", "--format", "{{.Name}}").split())
    assert names == {"host", "none"}
