"""A private Docker engine for the deployment test, and docker-compose driven against it.

The engine is Debian's `dockerd` with its own data root, exec root and socket in one temporary
folder, so it shares nothing with any other engine on the machine, and with no networking of
its own (`--bridge=none`, no iptables): every container of the test uses the host's network
and talks to 127.0.0.1. It is stopped by its PID and its folder removed, images and build
cache included, when the test session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Debian's client and compose: a newer `docker` first on PATH may lack the compose plugin.
DOCKER = "/usr/bin/docker"
COMPOSE = "/usr/bin/docker-compose"
DOCKERD = "/usr/sbin/dockerd"
NETWORK_FLAGS = ["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false"]


class CommandFailed(AssertionError):
    pass


@dataclass
class Engine:
    root: Path
    process: subprocess.Popen[bytes]
    storage_driver: str

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return run([DOCKER, *args], env=self.env, check=check, timeout=timeout)

    def answers(self) -> bool:
        done = subprocess.run(
            [DOCKER, "version", "--format", "{{.Server.Version}}"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def inspect(self, kind: str, *names: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.docker(kind, "inspect", *names))
        return found


def run(
    command: Sequence[str],
    *,
    env: dict[str, str],
    check: bool = True,
    timeout: float = 600,
    cwd: Path = REPO,
) -> str:
    """Run a command; on failure raise with the command and the tail of its output."""
    done = subprocess.run(
        list(command),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    if check and done.returncode != 0:
        tail = "\n".join(out.splitlines()[-40:])
        raise CommandFailed(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    return out


def missing_tools() -> list[str]:
    tools = [DOCKER, COMPOSE, DOCKERD, "/usr/sbin/debootstrap"]
    return [t for t in tools if not os.access(t, os.X_OK)]


def start_engine() -> Engine:
    """Start dockerd on overlay2, or on vfs where overlay2 does not work."""
    if os.geteuid() != 0:
        raise CommandFailed("the deployment test starts its own dockerd: run it as root")
    last_error = ""
    for driver in ("overlay2", "vfs"):
        # Short path: a unix socket's path must stay under 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="kotomi-docker-", dir="/var/tmp"))
        log = (root / "dockerd.log").open("wb")
        process = subprocess.Popen(
            [
                DOCKERD,
                *NETWORK_FLAGS,
                f"--storage-driver={driver}",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--pidfile={root / 'dockerd.pid'}",
                f"--host=unix://{root / 'docker.sock'}",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        engine = Engine(root=root, process=process, storage_driver=driver)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if engine.socket.exists() and engine.answers():
                info = json.loads(engine.docker("info", "--format", "{{json .}}"))
                if info.get("Driver") == driver:
                    return engine
                break
            time.sleep(0.5)
        last_error = (root / "dockerd.log").read_text(errors="replace")[-2000:]
        stop_engine(engine)
    raise CommandFailed(f"dockerd did not start on overlay2 or vfs:\n{last_error}")


def stop_engine(engine: Engine) -> None:
    """Remove every container, stop dockerd by its PID, remove its folder."""
    if engine.process.poll() is None:
        if engine.socket.exists():
            ids = engine.docker("ps", "-aq", check=False).split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        engine.process.send_signal(signal.SIGTERM)
        try:
            engine.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait(timeout=30)
    # dockerd unmounts its layers when it stops; whatever it left must not be deleted through.
    for mount in reversed(mounts_under(engine.root)):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(engine.root, ignore_errors=True)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix):
            found.append(target)
    return found


@dataclass
class Compose:
    """docker-compose with the project's files, against the test's engine."""

    engine: Engine
    project: str
    files: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        # An empty env file: a developer's .env beside docker-compose.yml must not leak in.
        empty = self.engine.root / "empty.env"
        empty.touch()
        command = [COMPOSE, "--env-file", str(empty), "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        # Builds through the engine's API, not through whichever `docker` is first on PATH.
        env = {**self.engine.env, "COMPOSE_DOCKER_CLI_BUILD": "0", **self.env}
        return run([*command, *args], env=env, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        """The id of a service's container (`up`), or of its one-off container (`run`)."""
        ids = self("ps", "-q", service).split()
        if not ids:
            ids = self.engine.docker(
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ).split()
        if not ids:
            raise CommandFailed(f"no container for service {service}")
        return ids[0]
