"""The docker-compose deployment run for real on this machine, without Docker.

The services' commands and environment are read from docker-compose.yml and deploy/ and run
as local processes (code server, webserver, daemon) against Debian's PostgreSQL, so the
end-to-end test exercises exactly what the compose file ships.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
PG = {"host": "127.0.0.1", "port": 5432, "user": "dagster", "password": "dagster"}


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_env(service: str) -> dict[str, str]:
    """A service's environment with `${VAR:-default}` resolved to its default."""
    raw = load_compose()["services"][service]["environment"]
    resolved = {}
    for key, value in raw.items():
        text = str(value)
        resolved[key] = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)
    return resolved


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Receiver(ThreadingHTTPServer):
    """An HTTP receiver for webhook alerts on loopback."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    receiver.posts.append(json.loads(body))
                except ValueError:
                    receiver.posts.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@dataclass
class WebserverClient:
    """The webserver's GraphQL API, driven like the UI drives it (also by tests/deploy/)."""

    web_port: int

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.web_url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        data: dict[str, Any] = answer["data"]
        return data

    def launch(self, job: str, run_config: dict[str, Any] | None = None) -> str:
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on RunConfigValidationInvalid { errors { message } }
            } }""",
            params={
                "selector": {
                    "repositoryLocationName": "kotomi_backup",
                    "repositoryName": "__repository__",
                    "jobName": job,
                },
                "runConfigData": run_config or {},
            },
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        run_id: str = data["run"]["runId"]
        return run_id

    def materialize(
        self, assets: list[list[str]], checks: list[tuple[list[str], str]] | None = None
    ) -> str:
        """What the UI's "Materialize" (and "Execute" on a check) launches: the implicit asset
        job with the selected assets and checks (by default every check of those assets)."""
        selector: dict[str, Any] = {
            "repositoryLocationName": "kotomi_backup",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": path} for path in assets],
        }
        if checks is not None:
            selector["assetCheckSelection"] = [
                {"assetKey": {"path": path}, "name": name} for path, name in checks
            ]
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on InvalidSubsetError { message }
            } }""",
            params={"selector": selector, "runConfigData": {}},
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        run_id: str = data["run"]["runId"]
        return run_id

    def step_failures(self, run_id: str) -> dict[str, dict[str, str]]:
        """{step key: {"className", "message"}} of the run's failed steps, as the UI shows."""
        data = self.graphql(
            """query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection {
                events { __typename ... on ExecutionStepFailureEvent {
                    stepKey error { message className } } } } } }""",
            id=run_id,
        )["logsForRun"]
        return {
            e["stepKey"]: e["error"]
            for e in data["events"]
            if e["__typename"] == "ExecutionStepFailureEvent" and e.get("error")
        }

    def asset(self, path: list[str]) -> dict[str, Any]:
        """An asset's latest run and materialization, and its freshness status."""
        data = self.graphql(
            """query($key: AssetKeyInput!) {
                assetsLatestInfo(assetKeys: [$key]) {
                    latestRun { runId status } latestMaterialization { runId } }
                assetNodeOrError(assetKey: $key) { ... on AssetNode {
                    freshnessStatusInfo { freshnessStatus } } } }""",
            key={"path": path},
        )
        latest: dict[str, Any] = data["assetsLatestInfo"][0]
        node = data["assetNodeOrError"] or {}
        latest["freshness"] = (node.get("freshnessStatusInfo") or {}).get("freshnessStatus")
        return latest

    def stop_schedule(self, name: str) -> None:
        data = self.graphql(
            """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
                ... on Schedule { scheduleState { id } } } }""",
            s={
                "repositoryLocationName": "kotomi_backup",
                "repositoryName": "__repository__",
                "scheduleName": name,
            },
        )
        state_id = data["scheduleOrError"]["scheduleState"]["id"]
        stopped = self.graphql(
            """mutation($id: String!) { stopRunningSchedule(id: $id) { __typename } }""",
            id=state_id,
        )["stopRunningSchedule"]
        assert stopped["__typename"] == "ScheduleStateResult", stopped

    def enum_choices(self, job: str) -> dict[str, list[str]]:
        """{enum config type: its values} of a job's Launchpad form."""
        data = self.graphql(
            """query($s: PipelineSelector!) { runConfigSchemaOrError(selector: $s) {
                ... on RunConfigSchema { allConfigTypes {
                    __typename key ... on EnumConfigType { values { value } } } } } }""",
            s={
                "repositoryLocationName": "kotomi_backup",
                "repositoryName": "__repository__",
                "pipelineName": job,
            },
        )["runConfigSchemaOrError"]
        return {
            t["key"]: [v["value"] for v in t["values"]]
            for t in data["allConfigTypes"]
            if t["__typename"] == "EnumConfigType"
        }

    def reexecute_from_failure(self, parent: str) -> str:
        data = self.graphql(
            """mutation($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            } }""",
            p={"parentRunId": parent, "strategy": "FROM_FAILURE"},
        )["launchRunReexecution"]
        assert data["__typename"] == "LaunchRunSuccess", data
        run_id: str = data["run"]["runId"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(
            """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
                runId status jobName tags { key value } stepStats { stepKey status startTime }
            } } }""",
            id=run_id,
        )["runOrError"]
        return data

    def wait_run(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish in {timeout} s: {self.run(run_id)}")

    def messages(self, run_id: str) -> list[tuple[str, str]]:
        """A run's event log as (event type, message and error), oldest first."""
        data = self.graphql(
            """query($id: ID!) { logsForRun(runId: $id, limit: 1000) {
                ... on EventConnection { events { __typename
                    ... on MessageEvent { message }
                    ... on ErrorEvent { error { errorChain { error { message } } } } } } } }""",
            id=run_id,
        )
        events: list[dict[str, Any]] = data["logsForRun"]["events"]
        found = []
        for event in events:
            # The error and its causes: an op's own error sits below Dagster's wrapper.
            chain = (event.get("error") or {}).get("errorChain") or []
            texts = [event.get("message") or "", *(link["error"]["message"] for link in chain)]
            found.append((event["__typename"], " ".join(texts)))
        return found

    def runs(self) -> list[dict[str, Any]]:
        data = self.graphql(
            """{ runsOrError(limit: 100) { ... on Runs { results {
                runId status jobName tags { key value } } } } }"""
        )
        results: list[dict[str, Any]] = data["runsOrError"]["results"]
        return results


@dataclass
class Deployment(WebserverClient):
    root: Path
    env: dict[str, str]
    receiver: Receiver
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def backups(self) -> Path:
        return Path(self.env["KOTOMI_BACKUP_URL"])

    @property
    def db(self) -> Path:
        return Path(self.env["KOTOMI_DB_PATH"])


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def command_for(service: str, *, grpc_port: int, web_port: int, workspace: Path) -> list[str]:
    """The compose service's command, pointed at loopback ports and the test's workspace."""
    command = [str(c) for c in load_compose()["services"][service]["command"]]
    out = []
    for i, arg in enumerate(command):
        previous = command[i - 1] if i else ""
        if arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif previous == "-p" and service == "user_code":
            arg = str(grpc_port)
        elif previous == "-p" and service == "webserver":
            arg = str(web_port)
        elif previous == "-w":
            arg = str(workspace)
        out.append(arg)
    return out


def start_deployment(root: Path, extra_env: dict[str, str]) -> Iterator[Deployment]:
    import psycopg2

    from kotomi_backup_dagster.demo import generate_demo_database

    db_name = f"kotomi_e2e_{secrets.token_hex(4)}"
    admin = psycopg2.connect(dbname="postgres", **PG)  # type: ignore[arg-type]
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db_name}")

    home = root / "dagster_home"
    home.mkdir()
    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    for part in ("local_artifact_storage", "compute_logs"):  # the image's volume, here a folder
        instance[part]["config"]["base_dir"] = str(home / "storage")
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    grpc_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))

    (root / "data").mkdir()
    generate_demo_database(root / "data" / "kotomi.db", size_bytes=1_000_000, seed=11)
    receiver = Receiver()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTOMI_", "DAGSTER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(compose_env("user_code"))
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=PG["host"],
        DAGSTER_PG_DB=db_name,
        KOTOMI_DB_PATH=str(root / "data" / "kotomi.db"),
        KOTOMI_BACKUP_URL=str(root / "backups"),
        KOTOMI_BACKUP_STAGING_DIR=str(root / "staging"),
        KOTOMI_BACKUP_ALERT_WEBHOOK_URL=receiver.url,
        KOTOMI_BACKUP_WEBSERVER_URL=f"http://127.0.0.1:{web_port}",
        # The 15-minute paged backup is off: its runs would land at random in the journey.
        KOTOMI_BACKUP_FREQUENT_CRON="off",
        **extra_env,
    )
    deployment = Deployment(root=root, env=env, web_port=web_port, receiver=receiver)
    logs = root / "logs"
    logs.mkdir()
    try:
        for service in ("user_code", "webserver", "daemon"):
            command = command_for(
                service, grpc_port=grpc_port, web_port=web_port, workspace=home / "workspace.yaml"
            )
            log = (logs / f"{service}.log").open("wb")
            deployment.processes[service] = subprocess.Popen(
                command,
                env=env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if service == "user_code":
                _wait_grpc(grpc_port, deployment.processes[service])
        _wait_http(f"{deployment.web_url}/server_info", deployment.processes["webserver"], 120)
        yield deployment
    finally:
        for process in deployment.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in deployment.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        receiver.shutdown()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        admin.close()


def _wait_grpc(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"code server exited with {process.returncode}")
        probe = subprocess.run(
            ["dagster", "api", "grpc-health-check", "-p", str(port), "-h", "127.0.0.1"],
            capture_output=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        if probe.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"code server on port {port} not healthy in {timeout} s")


def screenshot(pages: dict[Path, str], profile: Path) -> None:
    """Render UI pages in Debian's headless Chromium (driven by Debian's chromedriver), after
    dismissing the UI's first-visit dialog and letting its queries load."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--window-size=1440,900",
    ):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium look for a driver online
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        for out, url in pages.items():
            browser.get(url)
            time.sleep(4)
            for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
                button.click()
            time.sleep(2)
            browser.save_screenshot(str(out))
    finally:
        browser.quit()
