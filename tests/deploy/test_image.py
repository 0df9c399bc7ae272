"""The image itself: lean (no compiler, no installer, the pinned set and nothing else, under
600 MB), run as Kotomi's uid, and a HEALTHCHECK that can fail."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.conftest import FACTS
from tests.deploy.docker import REPO, CommandFailed, Engine

# The first test here also waits for the images to build (several minutes on 2 busy cores).
pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.timeout(1800)]


def in_image(engine: Engine, image: str, *command: str) -> str:
    return engine.docker("run", "--rm", "--network", "host", image, *command)


def test_size_user_and_healthcheck(engine: Engine, images: str) -> None:
    [info] = engine.inspect("image", images)
    size_mb = info["Size"] / 1e6
    FACTS.append(f"image {images}: {size_mb:.0f} MB")
    assert size_mb < 600
    assert info["Config"]["User"] == "1000:1000"
    assert "/opt/dagster/healthcheck.py" in info["Config"]["Healthcheck"]["Test"]


def test_no_compiler_no_installer_and_the_tools_a_restore_by_hand_needs(
    engine: Engine, images: str
) -> None:
    found = in_image(
        engine, images, "sh", "-c",
        "for c in gcc cc c++ g++ clang make pip pip3 apt-get kotomi-backup sqlite3 zstd age; "
        "do command -v $c >/dev/null && echo $c; done; true",
    ).split()  # fmt: skip
    assert found == ["apt-get", "kotomi-backup", "sqlite3", "zstd", "age"]
    # The build stage's CA certificates and arguments stay there.
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", images)
    assert "CERTIFICATE" not in history and "EXTRA_CA_CERTS" not in history


def test_the_installed_set_is_the_pinned_one(engine: Engine, images: str) -> None:
    out = in_image(
        engine, images, "python", "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted(f'{d.name}=={d.version}' for d in m.distributions())))",
    )  # fmt: skip
    installed = {normalize(line) for line in json.loads(out)}
    lock = (REPO / "deploy" / "constraints.txt").read_text().splitlines()
    pinned = {normalize(line) for line in lock if line and not line.startswith("#")}
    extra = installed - pinned
    assert {e.split("==")[0] for e in extra} == {"kotomi-backup-dagster"}
    assert pinned <= installed
    assert not any(e.startswith(("dagster-gcp==", "pyarrow==", "pandas==")) for e in installed)


def normalize(requirement: str) -> str:
    name, version = requirement.strip().split("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def test_the_healthcheck_fails_when_the_endpoint_does_not_answer(
    engine: Engine, images: str
) -> None:
    # PID 1 claims to be a webserver and a code server on ports where nothing listens.
    for claim in (["dagster-webserver", "-p", "9"], ["dagster", "code-server", "-p", "9"]):
        container = engine.docker(
            "run", "-d", "--network", "host", "--entrypoint", "python", images,
            "-c", "import time; time.sleep(120)", *claim,
        ).strip()  # fmt: skip
        try:
            with pytest.raises(CommandFailed, match="unhealthy"):
                engine.docker("exec", container, "python", "/opt/dagster/healthcheck.py")
        finally:
            engine.docker("rm", "-f", container)
    # Without an endpoint (the daemon, a run, the CLI) the probe passes.
    assert in_image(engine, images, "python", "/opt/dagster/healthcheck.py") == ""
