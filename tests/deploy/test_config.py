"""The deployment's files agree with each other (no Docker needed): the two Dagster instances
differ only by their run launcher, and a run in a container of its own gets what the code
server has (settings and volumes)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.deploy.docker import REPO

DEPLOY = REPO / "deploy"


def load(path: str) -> Any:
    return yaml.safe_load((REPO / path).read_text())


def defaults(text: str) -> str:
    """`${VAR:-default}` as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_the_docker_runs_instance_is_the_default_one_plus_its_launcher() -> None:
    default = load("deploy/dagster.yaml")
    docker_runs = load("deploy/docker-runs/dagster.yaml")
    launcher = docker_runs.pop("run_launcher")
    assert docker_runs == default
    assert launcher["class"] == "DockerRunLauncher"


def test_a_run_container_gets_the_code_servers_settings_and_volumes() -> None:
    compose = load("docker-compose.yml")
    code_server = compose["services"]["user_code"]
    settings = set(code_server["environment"])
    launcher = load("deploy/docker-runs/dagster.yaml")["run_launcher"]["config"]
    passed = set(launcher["env_vars"])
    # Every setting but those the image or the launcher itself provides.
    assert passed == settings - {
        "DAGSTER_HOME",
        "KOTOMI_BACKUP_CODE_SERVER_HOST",
        "KOTOMI_BACKUP_CODE_SERVER_PORT",
    }

    overlay = load("deploy/docker-runs/compose.yml")["services"]["user_code"]["environment"]
    context = json.loads(defaults(overlay["DAGSTER_CONTAINER_CONTEXT"]))["docker"]
    named = {key: (value or {}).get("name", key) for key, value in compose["volumes"].items()}
    mounts = {
        f"{defaults(named[v.split(':')[0]])}:{v.split(':')[1].split()[0]}"
        for v in code_server["volumes"]
    }
    assert set(context["container_kwargs"]["volumes"]) == mounts
    # The CPU weight that puts Kotomi's container first, where runs execute in either shape.
    assert context["container_kwargs"]["cpu_shares"] == code_server["cpu_shares"] < 1024
    assert context["networks"] == [compose["networks"]["default"]["name"]]
    assert overlay["DAGSTER_CURRENT_IMAGE"] == code_server["image"]


def test_the_keeper_service_is_a_keeper_with_its_own_credentials_and_no_database() -> None:
    """docs/immutability.md: the compose file shows both roles. The keeper never mounts
    Kotomi's data, holds credentials of its own (not the writer's AWS_* variables) and the age
    identity, and keeps its own Dagster instance."""
    compose = load("docker-compose.yml")
    keeper = compose["services"]["keeper"]
    env = {k: defaults(str(v)) for k, v in keeper["environment"].items()}
    assert keeper["profiles"] == ["keeper"] and env["KOTOMI_BACKUP_ROLE"] == "keeper"
    assert keeper["environment"]["AWS_ACCESS_KEY_ID"] == "${KEEPER_AWS_ACCESS_KEY_ID:-}"
    assert keeper["environment"]["AWS_SECRET_ACCESS_KEY"] == "${KEEPER_AWS_SECRET_ACCESS_KEY:-}"
    assert "KOTOMI_BACKUP_AGE_IDENTITY" in env and "KOTOMI_DB_PATH" not in env
    assert not any(v.startswith("kotomi-data:") for v in keeper["volumes"])
    writer = compose["services"]["user_code"]["environment"]
    assert "KOTOMI_BACKUP_AGE_IDENTITY" not in writer, "the private key stays off Kotomi's host"
    assert writer["KOTOMI_BACKUP_ROLE"] == "${KOTOMI_BACKUP_ROLE:-both}"
