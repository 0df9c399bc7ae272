"""Session fixtures of the deployment test: the private Docker engine and the images.

Each step's wall time is printed at the end of the run (`deployment test, step times`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.docker import REPO, Engine, missing_tools, run, start_engine, stop_engine

STEP_TIMES: dict[str, float] = {}
FACTS: list[str] = []  # measured on the way, printed with the step times
IMAGE = "kotomi-backup-dagster"


class timed:
    """Adds the wall time of a `with` block to STEP_TIMES[name]."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        STEP_TIMES[self.name] = STEP_TIMES.get(self.name, 0.0) + elapsed


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STEP_TIMES:
        terminalreporter.section("deployment test, step times")
        for name, seconds in STEP_TIMES.items():
            terminalreporter.write_line(f"{name:<44} {seconds:7.1f} s")
        for fact in FACTS:
            terminalreporter.write_line(fact)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/install-docker.sh", False)
    with timed("dockerd start"):
        started = start_engine()
    try:
        yield started
    finally:
        with timed("cleanup (containers, dockerd, its folder)"):
            stop_engine(started)


@pytest.fixture(scope="session")
def images(engine: Engine) -> str:
    """The base images from Debian's packages, then the project's image from its Dockerfile
    (built through docker-compose.yml, as the README says); returns the image's name."""
    env = dict(engine.env)
    if os.environ.get("CI") != "true":
        # Between runs on one's own machine the debootstrap tarball is kept; CI starts clean.
        env["KOTOMI_BASE_CACHE"] = str(Path.home() / ".cache" / "kotomi-backup-dagster")
    with timed("base images (debootstrap, python, postgres)"):
        out = run([str(REPO / "scripts" / "build-local-base-images.sh")], env=env, timeout=1800)
    for line in out.splitlines():
        if line.startswith("took "):  # the script's own step times
            _, name, seconds = line.split(maxsplit=2)
            STEP_TIMES[f"  {name}"] = float(seconds.rstrip(" s"))
    from tests.deploy.stack import compose_for

    with timed("project image (docker-compose build)"):
        compose_for(engine, "build", docker_runs=False, ports={})("build", timeout=1800)
    return IMAGE
