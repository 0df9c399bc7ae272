"""docker-compose.yml brought up for real, with Kotomi's stand-in writing to its volume.

Files: docker-compose.yml, plus deploy/docker-runs/compose.yml for runs in containers of their
own, plus the test's one override (tests/deploy/compose.override.yml: host network, ports the
test picks, local base images). Published ports and host networking exclude each other in
docker-compose 1.29 and an override cannot remove the webserver's `ports`, so the webserver is
started with `docker-compose run` (which publishes none); everything else comes up with `up`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.deploy.docker import REPO, Compose, Engine
from tests.e2e.deployment import Receiver, WebserverClient, free_port

OVERRIDE = REPO / "tests" / "deploy" / "compose.override.yml"
DOCKER_RUNS = REPO / "deploy" / "docker-runs" / "compose.yml"
IMAGE = "kotomi-backup-dagster"
T = TypeVar("T")
KOTOMI_VOLUME = "kotomi-data"
KOTOMI_DB = "/app/data/kotomi.db"  # where Kotomi's image has it
DB_IN_DAGSTER = "/data/kotomi.db"  # where docker-compose.yml mounts it (KOTOMI_DB_PATH)


def extra_ca_certificates() -> str:
    """The certificates this machine added to Debian's bundle (e.g. a TLS-inspecting proxy's):
    pip in the image build must trust them too (build argument EXTRA_CA_CERTS)."""
    folder = Path("/usr/local/share/ca-certificates")
    return "".join(p.read_text() for p in sorted(folder.rglob("*.crt")))


def compose_for(
    engine: Engine, project: str, *, docker_runs: bool, ports: dict[str, int]
) -> Compose:
    files = [REPO / "docker-compose.yml"]
    if docker_runs:
        files.append(DOCKER_RUNS)
    files.append(OVERRIDE)
    env = {
        "TEST_PG_PORT": str(ports.get("pg", 0)),
        "TEST_GRPC_PORT": str(ports.get("grpc", 0)),
        "TEST_WEB_PORT": str(ports.get("web", 0)),
        "EXTRA_CA_CERTS": extra_ca_certificates(),
        "KOTOMI_DATA_VOLUME": KOTOMI_VOLUME,
    }
    if docker_runs:
        env.update(
            DOCKER_SOCKET=str(engine.socket),
            DOCKER_GID=str(engine.socket.stat().st_gid),
            KOTOMI_BACKUP_RUN_NETWORK="host",
        )
    return Compose(engine=engine, project=project, files=files, env=env)


@dataclass
class KotomiStandin:
    """A container standing in for Kotomi: uid 1000, Kotomi's volume at /app/data, the
    project's Kotomi writer (tests/deploy/kotomi_standin.py) committing requests."""

    engine: Engine
    name: str = "kotomi"

    def create(self, rate: float) -> None:
        script = REPO / "tests" / "deploy" / "kotomi_standin.py"
        self.engine.docker(
            "run", "-d", "--name", self.name, "--network", "host", "--user", "1000:1000",
            "-v", f"{KOTOMI_VOLUME}:/app/data",
            "-v", f"{script}:/opt/kotomi_standin.py:ro",
            IMAGE, "python", "/opt/kotomi_standin.py", KOTOMI_DB, str(rate),
        )  # fmt: skip
        self.wait_for("ready", 1)

    def log(self) -> list[str]:
        return self.engine.docker("logs", self.name).splitlines()

    def wait_for(self, line: str, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(line) >= count:
                return
            state = self.engine.inspect("container", self.name)[0]["State"]
            if not state["Running"] and line != "stopped":
                raise AssertionError(f"Kotomi's stand-in exited: {self.log()[-20:]}")
            time.sleep(0.5)
        raise AssertionError(f"Kotomi's stand-in did not print {line!r} in {timeout} s")

    def comments(self) -> list[str]:
        """Every comment committed so far, in commit order."""
        return [line.split()[1] for line in self.log() if line.startswith("comment ")]

    def stop(self) -> None:
        stops = self.log().count("stopped")
        self.engine.docker("stop", "-t", "30", self.name)
        self.wait_for("stopped", stops + 1)

    def start(self) -> None:
        readies = self.log().count("ready")
        self.engine.docker("start", self.name)
        self.wait_for("ready", readies + 1)


@dataclass
class Stack:
    engine: Engine
    compose: Compose
    client: WebserverClient
    receiver: Receiver
    kotomi: KotomiStandin

    def on_volume(self, *command: str, volume: str = KOTOMI_VOLUME, at: str = "/app/data") -> str:
        """Run a command as root in a throwaway container with a volume mounted."""
        return self.engine.docker(
            "run", "--rm", "--network", "host", "--user", "0", "-v", f"{volume}:{at}",
            IMAGE, *command,
        )  # fmt: skip

    def backup_rows(self) -> dict[str, list[str]]:
        """Every backup on the local destination, restored: its comments in commit order."""
        script = REPO / "tests" / "deploy" / "backup_rows.py"
        out = self.engine.docker(
            "run", "--rm", "--network", "host",
            "-v", "kotomi-backups:/backups:ro",
            "-v", f"{script}:/opt/backup_rows.py:ro",
            IMAGE, "python", "/opt/backup_rows.py", "/backups",
        )  # fmt: skip
        rows: dict[str, list[str]] = json.loads(out.splitlines()[-1])
        return rows

    def exec(self, service: str, *command: str) -> str:
        """Run a command in a service's container (one started by `run` included)."""
        return self.engine.docker("exec", self.compose.container(service), *command)

    @contextmanager
    def broken_destination(self) -> Iterator[None]:
        """The local destination breaks for real: its folder is replaced by a file."""
        fix = "rm /backups/kotomi && mv /backups/kotomi.moved /backups/kotomi"
        self.exec("user_code", "sh", "-c", "mv /backups/kotomi /backups/kotomi.moved && "
                  "echo x > /backups/kotomi")  # fmt: skip
        try:
            yield
        finally:
            self.exec("user_code", "sh", "-c", fix)

    def healthy(self, service: str) -> str:
        state = self.engine.inspect("container", self.compose.container(service))[0]["State"]
        status: str = state.get("Health", {}).get("Status", "none")
        return status


@contextmanager
def bring_up(
    engine: Engine, project: str, *, docker_runs: bool, env: dict[str, str], logs: Path
) -> Iterator[Stack]:
    """Kotomi's volume and stand-in, then the stack; everything removed afterwards."""
    ports = {"pg": free_port(), "grpc": free_port(), "web": free_port()}
    compose = compose_for(engine, project, docker_runs=docker_runs, ports=ports)
    receiver = Receiver()
    compose.env.update(
        KOTOMI_BACKUP_ALERT_WEBHOOK_URL=receiver.url,
        KOTOMI_BACKUP_WEBSERVER_URL=f"http://127.0.0.1:{ports['web']}",
        **env,
    )
    kotomi = KotomiStandin(engine)
    client = WebserverClient(web_port=ports["web"])
    stack = Stack(engine, compose, client, receiver, kotomi)
    try:
        # Kotomi's image owns /app/data as uid 1000, so its new volume does too.
        engine.docker("volume", "create", KOTOMI_VOLUME)
        stack.on_volume("chown", "1000:1000", "/app/data")
        kotomi.create(rate=20)
        compose("up", "-d", "postgres", "user_code", "daemon")
        compose("run", "-d", "webserver")
        _wait_until_healthy(stack, ("postgres", "user_code", "webserver"), timeout=240)
        yield stack
    finally:
        logs.write_text(compose("logs", "--no-color", check=False))
        compose("down", "-v", "--remove-orphans", check=False)
        engine.docker("rm", "-f", kotomi.name, check=False)
        engine.docker("volume", "rm", "-f", KOTOMI_VOLUME, check=False)
        receiver.shutdown()


def _wait_until_healthy(stack: Stack, services: tuple[str, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {s: stack.healthy(s) for s in services}
        if all(v == "healthy" for v in status.values()):
            return
        time.sleep(1)
    raise AssertionError(f"services not healthy in {timeout} s: {status}")


def wait_for(probe: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"{what}: not seen in {timeout} s")
