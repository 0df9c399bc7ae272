"""Priority in Dagster runs: a backup's and a drill's work runs in a thread of its own
(`kotomi-low`) at SCHED_IDLE, nice 19 and the idle I/O class, the run's own thread keeps its
priority, and the restore job runs at normal priority, even in a process that ran a backup
before it.

The runs execute in process, in a thread the test starts; each is caught where it waits on the
test (a database held locked, an age identity that is a FIFO not written yet) and the kernel's
view of the threads is read then (/proc, ioprio_get)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from kotomi_backup_dagster.defs.backup.resources import KotomiBackupResource
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.priority import BACKGROUND_THREAD
from tests.conftest import (
    LOWERED,
    AgeKey,
    FifoIdentity,
    exclusively_locked,
    observed_priority,
    run_job,
    snapshot_waiting,
    threads_of,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")


class RunInThread:
    """A job executed in process in a thread of its own; what its thread's priority was after."""

    def __init__(self, name: str, **execute: Any) -> None:
        self.result: Any = None
        self.after: tuple[str, int, str] | None = None
        self.thread = threading.Thread(target=self._run, args=(name, execute))
        self.thread.start()

    def _run(self, name: str, execute: dict[str, Any]) -> None:
        self.result = run_job(name, DagsterInstance.ephemeral(), **execute)
        self.after = observed_priority()

    def ended(self) -> object:
        return None if self.thread.is_alive() else True

    def join(self) -> Any:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()
        return self.result


def background_threads() -> dict[int, tuple[str, int, str]]:
    return {
        tid: observed_priority(os.getpid(), tid)
        for tid, name in threads_of(os.getpid()).items()
        if name == BACKGROUND_THREAD
    }


def test_a_backup_runs_its_work_lowered_and_leaves_the_run_thread_as_it_was(
    dagster_env: Path, kotomi_db: Path
) -> None:
    before = observed_priority()
    staging = dagster_env.parent / "staging"
    with exclusively_locked(kotomi_db):  # the snapshot step waits for it
        run = RunInThread("kotomi_backup")
        wait_until("the snapshot began", lambda: snapshot_waiting(staging), run.ended)
        seen = background_threads()
    assert run.join().success
    # Lowered; the copy of the live database reads at best-effort 7 (engine/priority.py).
    assert set(seen.values()) == {("idle", 19, "best-effort/7")}
    assert run.after == before  # the step's thread: a restore next in it keeps its priority


def encrypted_backup(monkeypatch: pytest.MonkeyPatch, age_key: AgeKey) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_RECIPIENTS", age_key.recipient)
    assert run_job("kotomi_backup").success  # in this process: its steps were lowered


def test_a_drill_runs_lowered(
    dagster_env: Path, monkeypatch: pytest.MonkeyPatch, age_key: AgeKey, tmp_path: Path
) -> None:
    encrypted_backup(monkeypatch, age_key)
    identity = FifoIdentity(tmp_path / "key.fifo", age_key)
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_IDENTITY", str(identity.path))
    run = RunInThread("kotomi_restore_drill")
    wait_until("the drill opened the age identity", identity.opened_by_reader, run.ended)
    seen = background_threads()
    identity.hand_over()
    assert run.join().success
    assert set(seen.values()) == {LOWERED}


def test_the_restore_job_keeps_normal_priority_after_a_backup_in_the_same_process(
    dagster_env: Path, monkeypatch: pytest.MonkeyPatch, age_key: AgeKey, tmp_path: Path
) -> None:
    before = observed_priority()
    encrypted_backup(monkeypatch, age_key)
    identity = FifoIdentity(tmp_path / "key.fifo", age_key)
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_IDENTITY", str(identity.path))
    target = tmp_path / "data" / "restored.db"  # a new file in the database's folder
    config = {"database": "kotomi", "backup": "latest", "target_path": str(target)}
    run = RunInThread(
        "restore_job", run_config={"ops": {"choose_backup_to_restore": {"config": config}}}
    )
    wait_until("the restore opened the age identity", identity.opened_by_reader, run.ended)
    restoring = observed_priority(os.getpid(), run.thread.native_id)
    lowered = background_threads()
    identity.hand_over()
    assert run.join().success
    assert target.exists()
    assert restoring == before  # the thread doing the restore
    assert lowered == {}  # and nothing of it in a lowered thread


def test_priority_normal_runs_the_backup_in_the_run_thread(
    dagster_env: Path, kotomi_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTOMI_BACKUP_PRIORITY", "normal")
    before = observed_priority()
    with exclusively_locked(kotomi_db):
        run = RunInThread("kotomi_backup")
        staging = dagster_env.parent / "staging"
        wait_until("the snapshot began", lambda: snapshot_waiting(staging), run.ended)
        lowered = background_threads()
        running = observed_priority(os.getpid(), run.thread.native_id)
    assert run.join().success
    assert (lowered, running) == ({}, before)


def test_the_settings_reach_the_resource_and_a_bad_one_stops_the_load(
    dagster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = KotomiBackupResource(priority="normal", read_mbps="250")
    assert (res.settings().priority, res.settings().read_mbps) == ("normal", 250.0)
    default = KotomiBackupResource().settings()  # unset: the variables at run time
    assert (default.priority, default.read_mbps) == ("low", None)
    monkeypatch.setenv("KOTOMI_BACKUP_READ_MBPS", "fast")
    with pytest.raises(Exception, match="KOTOMI_BACKUP_READ_MBPS 'fast': give a positive number"):
        definitions_from_env()
    monkeypatch.setenv("KOTOMI_BACKUP_READ_MBPS", "100")
    monkeypatch.setenv("KOTOMI_BACKUP_PRIORITY", "lowest")
    with pytest.raises(Exception, match="KOTOMI_BACKUP_PRIORITY 'lowest': use low or normal"):
        definitions_from_env()
