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
from tests.deploy.stack import Stack, bring_up

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(engine: Engine, images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("docker-runs") / "compose.log"
    with timed("compose up (runs in containers)"):
        started = bring_up(engine, "kotomi-backup-runs", docker_runs=True, env={}, logs=logs)
        stack = started.__enter__()
    try:
        with timed("journey (runs in containers)"):
            yield stack
    finally:
        started.__exit__(None, None, None)


def run_container(stack: Stack, run: dict[str, Any]) -> str:
    """The container the launcher started for a run (its tag), checked against the log."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    container = tags["docker/container_id"]
    messages = [m for _, m in stack.client.messages(run["runId"])]
    assert any(f"Launching run in a new container {container}" in m for m in messages)
    return container


def service_containers(stack: Stack, engine: Engine) -> set[str]:
    ids = engine.docker("ps", "-q", "--no-trunc").split()
    return {c["Id"] for c in engine.inspect("container", *ids)}


def test_a_backup_runs_in_a_container_of_its_own(stack: Stack, engine: Engine) -> None:
    run = stack.client.wait_run(stack.client.launch("kotomi_backup"))
    assert run["status"] == "SUCCESS", run
    container = run_container(stack, run)
    assert container not in service_containers(stack, engine)
    # The finished run's container is gone (auto_remove): nothing piles up run after run.
    assert not engine.docker("ps", "-aq", "--filter", f"id={container}").strip()
    listing = json.loads(stack.exec("user_code", "kotomi-backup", "list", "--json"))
    assert len(listing["destinations"][0]["backups"]) == 1


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
    run = stack.client.wait_run(stack.client.launch("restore_job", config))
    assert run["status"] == "SUCCESS", run
    assert run_container(stack, run) not in service_containers(stack, engine)
    [manifest] = json.loads(stack.exec("user_code", "kotomi-backup", "list", "--json"))[
        "destinations"
    ][0]["backups"]
    out = stack.on_volume(
        "sh", "-c", "stat -c '%u:%g' /app/data/kotomi-restored.db && "
        "sha256sum /app/data/kotomi-restored.db",
    )  # fmt: skip
    owner, digest = out.split()[0], out.split()[1]
    assert owner == "1000:1000"
    assert digest == manifest["db_sha256"]
