"""End to end through real Dagster processes: the compose deployment's code server, webserver
and daemon on PostgreSQL, driven through the webserver's GraphQL API like the UI drives it."""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.catalog import list_backups
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.e2e.deployment import (
    REPO,
    Deployment,
    command_for,
    compose_env,
    load_compose,
    screenshot,
    start_deployment,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # The daemon fires the backup schedule every minute here, so a tick is seen in the test.
    yield from start_deployment(tmp_path_factory.mktemp("e2e"), {"KOTOMI_BACKUP_CRON": "* * * * *"})


def test_compose_file_runs_what_the_end_to_end_test_runs() -> None:
    services = load_compose()["services"]
    assert {"postgres", "user_code", "webserver", "daemon"} <= set(services)
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    code = command_for("user_code", grpc_port=1, web_port=2, workspace=Path("w"))
    assert code[:3] == ["dagster", "code-server", "start"]
    assert "kotomi_backup_dagster.definitions" in code
    # The data volume is mounted read-write where the backup reads it (WAL readers need -shm).
    data = [v for v in services["user_code"]["volumes"] if v.split(":")[1] == "/data"]
    assert data and not data[0].split("#")[0].strip().endswith(":ro")
    env = compose_env("user_code")
    assert env["KOTOMI_DB_PATH"].startswith("/data/")
    assert env == compose_env("webserver") == compose_env("daemon")
    for binary in ("dagster", "dagster-webserver", "dagster-daemon"):
        assert shutil.which(binary, path=os.path.dirname(os.sys.executable))  # type: ignore[attr-defined]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "deploy/dagster.yaml" in dockerfile and "USER 1000:1000" in dockerfile


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_user_journey(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    # 1. A backup through the UI's API.
    first = d.wait_run(d.launch("kotomi_backup"))
    assert first["status"] == "SUCCESS", first
    assert len(list_backups(LocalStore(d.backups), "kotomi").backups) >= 1

    # 2. The destination becomes unusable: the upload stage fails, the run fails, an alert.
    folder = d.backups / "kotomi"
    moved = d.backups / "kotomi.moved"
    folder.rename(moved)
    folder.write_text("not a directory")
    failed = d.wait_run(d.launch("kotomi_backup"))
    assert failed["status"] == "FAILURE"
    steps = {s["stepKey"]: s["status"] for s in failed["stepStats"]}
    assert steps["kotomi__upload"] == "FAILURE"
    assert steps["kotomi__snapshot"] == "SUCCESS" and steps["kotomi__archive"] == "SUCCESS"
    alert = _wait_for(
        lambda: [p for p in d.receiver.posts if failed["runId"] in json.dumps(p)], 120
    )
    text = json.dumps(alert[0])
    assert "upload" in text and f"/runs/{failed['runId']}" in text

    # 3. The destination is back: re-execute from failure runs the upload alone.
    folder.unlink()
    moved.rename(folder)
    again = d.wait_run(d.reexecute_from_failure(failed["runId"]))
    assert again["status"] == "SUCCESS", again
    ran = {s["stepKey"] for s in again["stepStats"] if s["status"] == "SUCCESS"}
    assert ran == {"kotomi__upload"}
    listed = {m.backup_id for m in list_backups(LocalStore(d.backups), "kotomi").backups}
    assert len(listed) >= 2

    # 4. The daemon fires the schedule and the prune sensor on its own.
    def by(tag: str) -> list[dict]:  # type: ignore[type-arg]
        return [r for r in d.runs() if any(t["key"] == tag for t in r["tags"])]

    assert _wait_for(lambda: by("dagster/schedule_name"), 150)
    sensor_runs = _wait_for(lambda: by("dagster/sensor_name"), 120)
    assert sensor_runs[0]["jobName"] == "kotomi_prune"

    # 5. A restore launched with config, as from the Launchpad.
    backup_id = sorted(listed)[-1]
    target = tmp_path / "restored.db"
    restored = d.wait_run(
        d.launch(
            "restore_job",
            {
                "ops": {
                    "choose_backup_to_restore": {
                        "config": {
                            "database": "kotomi",
                            "backup": backup_id,
                            "target_path": str(target),
                        }
                    }
                }
            },
        )
    )
    assert restored["status"] == "SUCCESS", restored
    manifest = next(
        m for m in list_backups(LocalStore(d.backups), "kotomi").backups if m.backup_id == backup_id
    )
    assert sha256(target) == manifest.db_sha256

    # 6. The real UI, rendered by headless Chromium: the pipeline and the re-executed run.
    shots = Path(os.environ.get("E2E_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    pages = {
        shots
        / "asset-graph.png": f"{d.web_url}/locations/kotomi_backup/asset-groups/kotomi_backup",
        shots / "reexecuted-run.png": f"{d.web_url}/runs/{again['runId']}",
    }
    screenshot(pages, tmp_path / "chromium-profile")
    for path in pages:
        assert path.stat().st_size > 20_000, f"{path.name} looks blank"


def _wait_for(probe, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout} s")
