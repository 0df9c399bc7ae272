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

from kotomi_backup_dagster.defs.databases import DATABASE_TAG
from kotomi_backup_dagster.engine.layout import list_backups
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


KOTOMI = "kotomi"
SNAPSHOT, ARCHIVE, UPLOAD = ([KOTOMI, s] for s in ("snapshot", "archive", "upload"))
PRUNE, DRILL, TEST = ([KOTOMI, s] for s in ("prune", "restore_drill", "restore_test"))
CATALOG = [KOTOMI, "backup_catalog"]


def tags(run: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {t["key"]: t["value"] for t in run["tags"]}


def test_the_user_journey(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    # 1. A backup through the UI's API.
    first = d.wait_run(d.launch("kotomi_backup"))
    assert first["status"] == "SUCCESS", first
    assert tags(first)[DATABASE_TAG] == KOTOMI  # added at launch (the job's pools name it)
    assert len(list_backups(LocalStore(d.backups), KOTOMI).backups) >= 1

    # 2. The daemon fires the schedule and the prune sensor on its own; then the schedule
    #    is switched off so that the rest of the journey decides which backup is newest.
    def by(tag: str) -> list[dict]:  # type: ignore[type-arg]
        return [r for r in d.runs() if any(t["key"] == tag for t in r["tags"])]

    scheduled = _wait_for(lambda: by("dagster/schedule_name"), 150)
    assert tags(scheduled[0])[DATABASE_TAG] == KOTOMI
    sensor_runs = _wait_for(lambda: by("dagster/sensor_name"), 120)
    assert sensor_runs[0]["jobName"] == "kotomi_prune"
    d.stop_schedule("kotomi_daily_backup")
    for run in d.runs():
        d.wait_run(run["runId"])

    # 3. "Materialize" on each single asset and "Execute" on the single check, in lineage
    #    order; each run is tagged with its database when launched (one run per database).
    ui_runs = {
        "snapshot": d.materialize([SNAPSHOT]),
        "verify": d.materialize([], [(SNAPSHOT, "verify")]),
        "archive": d.materialize([ARCHIVE]),
        "upload": d.materialize([UPLOAD]),
        "prune": d.materialize([PRUNE]),
        "restore_drill": d.materialize([DRILL]),
        "restore_test": d.materialize([TEST]),
        "backup_catalog": d.materialize([CATALOG]),  # "Observe"
    }
    for action, run_id in ui_runs.items():
        run = d.wait_run(run_id)
        assert run["status"] == "SUCCESS", (action, run, d.step_failures(run_id))
        assert tags(run)[DATABASE_TAG] == KOTOMI, action
    staged = d.asset(SNAPSHOT)["latestMaterialization"]["runId"]
    assert staged == ui_runs["snapshot"]
    assert d.asset(UPLOAD)["latestMaterialization"]["runId"] == ui_runs["upload"]

    # 4. "Materialize all": every asset of the lineage in one run, drills after the upload.
    everything = d.wait_run(d.materialize([SNAPSHOT, ARCHIVE, UPLOAD, PRUNE, DRILL, TEST]))
    assert everything["status"] == "SUCCESS", d.step_failures(everything["runId"])
    started = {s["stepKey"]: s["startTime"] for s in everything["stepStats"]}
    assert started["kotomi__upload"] < started["kotomi__restore_drill"]
    assert started["kotomi__upload"] < started["kotomi__prune"]

    # 5. The destination becomes unusable: the upload stage fails, its headline is the
    #    cause (not Dagster's retry wrapper), the run fails, an alert goes out.
    folder = d.backups / KOTOMI
    moved = d.backups / "kotomi.moved"
    folder.rename(moved)
    folder.write_text("not a directory")
    failed = d.wait_run(d.launch("kotomi_backup"))
    assert failed["status"] == "FAILURE"
    steps = {s["stepKey"]: s["status"] for s in failed["stepStats"]}
    assert steps["kotomi__upload"] == "FAILURE"
    assert steps["kotomi__snapshot"] == "SUCCESS" and steps["kotomi__archive"] == "SUCCESS"
    error = d.step_failures(failed["runId"])["kotomi__upload"]
    headline = error["message"].splitlines()[0]
    assert error["className"] == "Failure"
    assert f"upload of kotomi to file://{d.backups} failed: " in headline, headline
    assert "max_retries" not in headline
    alert = _wait_for(
        lambda: [p for p in d.receiver.posts if failed["runId"] in json.dumps(p)], 120
    )
    text = json.dumps(alert[0])
    assert "upload" in text and f"/runs/{failed['runId']}" in text

    # 6. The destination is back: re-execute from failure runs the upload alone.
    folder.unlink()
    moved.rename(folder)
    again = d.wait_run(d.reexecute_from_failure(failed["runId"]))
    assert again["status"] == "SUCCESS", again
    ran = {s["stepKey"] for s in again["stepStats"] if s["status"] == "SUCCESS"}
    assert ran == {"kotomi__upload"}
    backups = list_backups(LocalStore(d.backups), KOTOMI).backups
    listed = {m.backup_id for m in backups}
    assert len(listed) >= 2

    # 7. A damaged archive: the drill fails, with the cause as its headline, and the drill
    #    asset shows as failed (its latest run failed; no new materialization).
    newest = backups[0]
    archive = d.backups / newest.archive.key
    intact = archive.read_bytes()
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0x10
    archive.write_bytes(bytes(damaged))
    drill = d.wait_run(d.materialize([DRILL]))
    assert drill["status"] == "FAILURE"
    drill_error = d.step_failures(drill["runId"])["kotomi__restore_drill"]
    assert (
        drill_error["message"]
        .splitlines()[0]
        .startswith(
            "dagster._core.definitions.events.Failure: "
            f"drill of kotomi backup {newest.backup_id} at "
        )
    ), drill_error
    drilled = d.asset(DRILL)
    assert drilled["latestRun"] == {"runId": drill["runId"], "status": "FAILURE"}
    assert drilled["latestMaterialization"]["runId"] != drill["runId"]
    archive.write_bytes(intact)
    repaired = d.wait_run(d.materialize([DRILL]))  # the archive is intact again: green
    assert repaired["status"] == "SUCCESS", d.step_failures(repaired["runId"])

    # 8. Dagster's own freshness: the upload is fresh.
    assert _wait_for(lambda: d.asset(UPLOAD)["freshness"] == "HEALTHY", 120)

    # 9. The restore Launchpad: the configured databases are choices; a restore with config.
    choices = d.enum_choices("restore_job")
    assert [v for k, v in choices.items() if k.startswith("KotomiDatabase")] == [[KOTOMI]]
    backup_id = newest.backup_id
    target = d.db.parent / "restored.db"  # the Launchpad creates new files beside it only
    # A restore refuses to start while another run of its database is in progress (the prune
    # the sensor started after the re-executed upload may still be): let them end first.
    for run in d.runs():
        d.wait_run(run["runId"])
    restored = d.wait_run(
        d.launch(
            "restore_job",
            {
                "ops": {
                    "choose_backup_to_restore": {
                        "config": {
                            "database": KOTOMI,
                            "backup": backup_id,
                            "target_path": str(target),
                        }
                    }
                }
            },
        )
    )
    assert restored["status"] == "SUCCESS", d.step_failures(restored["runId"])
    assert tags(restored)[DATABASE_TAG] == KOTOMI
    assert sha256(target) == newest.db_sha256

    # 10. The real UI, rendered by headless Chromium.
    shots = Path(os.environ.get("E2E_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    pages = {
        shots
        / "asset-graph.png": f"{d.web_url}/locations/kotomi_backup/asset-groups/kotomi_backup",
        shots / "reexecuted-run.png": f"{d.web_url}/runs/{again['runId']}",
        shots / "freshness.png": f"{d.web_url}/assets/kotomi/upload",
        shots / "failed-drill.png": f"{d.web_url}/runs/{drill['runId']}",
        shots / "restore-launchpad.png": (
            f"{d.web_url}/locations/kotomi_backup/jobs/restore_job/playground"
        ),
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
