"""The CLI's priority, seen from outside while the command works: `backup`, `drill`, `prune`
and `verify` yield to Kotomi (SCHED_IDLE, nice 19, the idle I/O class; best-effort 7 while the
live database is read) unless KOTOMI_BACKUP_PRIORITY=normal; `restore` keeps normal priority.

Each command is caught at a point where it waits on the test (a database the test holds
locked, an age identity that is a FIFO the test has not written yet), and the kernel's view of
every thread of the child process is read then: sched_getscheduler, /proc/<pid>/task/<tid>/stat,
ioprio_get.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    LOWERED,
    AgeKey,
    FifoIdentity,
    exclusively_locked,
    observed_priority,
    popen_cli,
    run_cli,
    snapshot_waiting,
    threads_of,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")


def priorities(pid: int) -> set[tuple[str, int, str]]:
    """(policy, nice, I/O class) of every thread of process `pid`, now."""
    return {observed_priority(pid, tid) for tid in threads_of(pid)}


def as_started() -> tuple[str, int, str]:
    """What a child that changes nothing has: this thread's priority, inherited."""
    return observed_priority()


@pytest.mark.parametrize(("setting", "lowered"), [(None, True), ("normal", False)])
def test_a_backup_runs_lowered_unless_the_setting_says_normal(
    kotomi_db: Path, tmp_path: Path, setting: str | None, lowered: bool
) -> None:
    staging = tmp_path / "staging"
    env = {"KOTOMI_BACKUP_STAGING_DIR": str(staging)}
    if setting:
        env["KOTOMI_BACKUP_PRIORITY"] = setting
    with exclusively_locked(kotomi_db):
        proc = popen_cli(
            "backup", "--db", str(kotomi_db), "--to", str(tmp_path / "b"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_until("its snapshot began", lambda: snapshot_waiting(staging), proc.poll)
        seen = priorities(proc.pid)
        copying = observed_priority(proc.pid)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    if lowered:
        # The thread copying the live database reads at best-effort 7, never idle: Kotomi
        # waits for the pages being read (engine/priority.py).
        assert copying == ("idle", 19, "best-effort/7")
        assert {(policy, nice) for policy, nice, _ in seen} == {("idle", 19)}, seen
    else:
        assert seen == {as_started()}, f"threads of the backup: {seen}"


@pytest.mark.parametrize(
    ("command", "lowered"), [("drill", True), ("verify", True), ("restore", False)]
)
def test_drill_and_verify_run_lowered_and_a_restore_keeps_normal_priority(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey, command: str, lowered: bool
) -> None:
    expected = LOWERED if lowered else as_started()
    test_itself = observed_priority()
    dest = tmp_path / "b"
    staging = {"KOTOMI_BACKUP_STAGING_DIR": str(tmp_path / "staging")}
    made = run_cli(
        "backup", "--db", str(kotomi_db), "--to", str(dest), "--json",
        env={**staging, "KOTOMI_BACKUP_AGE_RECIPIENTS": age_key.recipient},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    backup_id = __import__("json").loads(made.stdout)["backup_id"]
    args = {
        "drill": ["drill", "latest", "--from", str(dest)],
        "verify": ["verify", str(dest / "kotomi" / backup_id)],
        "restore": ["restore", "latest", "--db", str(tmp_path / "r" / "k.db"), "--from", str(dest)],
    }[command]
    (tmp_path / "r").mkdir()
    identity = FifoIdentity(tmp_path / "key.fifo", age_key)
    proc = popen_cli(
        *args,
        env={**staging, "KOTOMI_BACKUP_AGE_IDENTITY": str(identity.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until("it opened the age identity", identity.opened_by_reader, proc.poll)
    seen = priorities(proc.pid)
    identity.hand_over()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert seen == {expected}, f"threads of {command}: {seen}"
    assert observed_priority() == test_itself
