"""Hostile conditions: secrets handed over inline or misplaced, a careless umask, runs killed
mid-way, full disks, and a store that holds garbage, symlinks or tampered sizes.

Every condition is real: a SIGKILLed process, a tmpfs that fills up (or RLIMIT_FSIZE where
mounting is not allowed), real symlinks, a second user (nobody) where the tests run as root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo import generate_demo_database
from kotomi_backup_dagster.engine.backup import (
    run_backup,
    stage_archive,
    stage_snapshot,
    stage_upload,
    stage_verify,
)
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.redaction import redact
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import AgeKey, Proxies, SmallDisk, one_line_error, popen_cli, run_cli
from tests.servers import Endpoint, Rule

NOBODY = 65534


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def secret_key(age_key: AgeKey) -> str:
    return next(
        line for line in age_key.identity_file.read_text().splitlines() if line.startswith("AGE-")
    )


def assert_no_key(text: str, key: str) -> None:
    assert "AGE-SECRET-KEY" not in text.upper(), text
    assert key[20:40] not in text, text  # no fragment of it either


@contextlib.contextmanager
def python_running(code: str, path: Path) -> Iterator[None]:
    """Another process running `code` on `path`, from the moment it prints 'ready' to the end
    of the block (then killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def backup_cli(db: Path, dest: Path | str, *extra: str, env: dict[str, str] | None = None) -> str:
    made = run_cli("backup", "--db", str(db), "--to", str(dest), "--json", *extra, env=env)
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["backup_id"])


# --- secrets ------------------------------------------------------------------------------


def test_an_inline_age_identity_restores_and_drills_and_is_never_printed(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    dest = tmp_path / "backups"
    env = {"KOTOMI_BACKUP_AGE_RECIPIENTS": age_key.recipient}
    backup_cli(kotomi_db, dest, env=env)
    key = secret_key(age_key)
    # As SOPS hands it over: the file's content, comments included.
    inline = {"KOTOMI_BACKUP_AGE_IDENTITY": age_key.identity_file.read_text()}
    target = tmp_path / "restored" / "kotomi.db"
    target.parent.mkdir()
    done = run_cli("restore", "latest", "--db", str(target), "--from", str(dest), env=inline)
    assert done.returncode == 0, done.stderr
    drilled = run_cli(
        "drill", "--from", str(dest), "--json", env={"KOTOMI_BACKUP_AGE_IDENTITY": key}
    )
    assert drilled.returncode == 0, drilled.stderr
    assert json.loads(drilled.stdout)["drills"][0]["ok"] is True
    for proc in (done, drilled):
        assert_no_key(proc.stdout + proc.stderr, key)

    typo = key[:-1] + ("q" if key[-1] != "q" else "p")  # no longer a valid key
    for args in (["restore", "latest", "--db", str(target)], ["--debug", "drill"]):
        failed = run_cli(*args, "--from", str(dest), env={"KOTOMI_BACKUP_AGE_IDENTITY": typo})
        assert failed.returncode == 2, failed.stderr
        assert_no_key(failed.stdout + failed.stderr, typo)  # --debug's traceback included
        assert "not an age identity" in failed.stderr
    assert sha256(target) == sha256(target)  # still the restored file, nothing overwritten


def test_a_key_in_the_wrong_variable_is_not_printed(tmp_path: Path, age_key: AgeKey) -> None:
    """Swapped variables: the key given as the database path."""
    key = secret_key(age_key)
    proc = run_cli("backup", "--to", str(tmp_path / "b"), env={"KOTOMI_DB_PATH": key})
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "database not found" in line
    assert_no_key(line, key)


def test_redaction_covers_secret_shapes_and_secret_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv(
        "KOTOMI_BACKUP_ALERT_WEBHOOK_URL",
        "https://hooks.example/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
    )
    text = (
        "key AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQ "
        "at https://user:hunter22@db.example/x?token=abcdef123456&page=2, "
        "aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, "
        "hook https://hooks.example/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX, "
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    clean = redact(text)
    for secret in ("AGE-SECRET", "hunter22", "abcdef123456", "bPxRfiCY", "XXXXXXXXXXXX", "b3Blbn"):
        assert secret not in clean, clean
    assert "page=2" in clean and "db.example" in clean  # what is not secret stays readable
    assert "hunter22" not in str(BackupError("cannot reach https://user:hunter22@db.example"))


# --- file modes ----------------------------------------------------------------------------


def private_tree(root: Path) -> list[str]:
    """Everything under `root` (itself included) that is not 0600 (files) or 0700 (folders)."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if not path.is_symlink() and mode != want:
            wrong.append(f"{path.relative_to(root.parent)} {mode:o}")
    return wrong


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A world-traversable folder (as /var/lib or /srv are): whether another user can read
    what lies below depends on the modes this tool gives, not on pytest's private tmp."""
    base = Path(tempfile.mkdtemp(prefix="kotomi-hostile-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def read_as_nobody(path: Path) -> bool:
    """True when user nobody can read `path` (tests run as root can switch to it)."""
    done = subprocess.run(
        ["head", "-c", "1", str(path)],
        preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)),
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.parametrize("backup_format", ["full", "paged"])
def test_staged_copies_caches_stores_and_restores_are_private_whatever_the_umask(
    kotomi_db: Path, open_base: Path, backup_format: str
) -> None:
    data = open_base / "data"
    data.mkdir(mode=0o700)
    live = data / "kotomi.db"
    shutil.copyfile(kotomi_db, live)
    live.chmod(0o600)
    staging, store = open_base / "staging", open_base / "backups"
    settings = BackupSettings.from_env(
        db_path=live, urls=(str(store),), staging_dir=staging, backup_format=backup_format
    )
    old = os.umask(0)  # the most careless umask there is
    try:
        for _ in range(2):  # the second paged backup reads the live database in place
            staged, _snap = stage_snapshot(settings)  # a Dagster run's stages: kept on disk
            stage_verify(staged, settings)
            stage_archive(staged, settings)
            assert private_tree(staging) == []  # snapshot, delta, hashes, JSON: all private
            if os.geteuid() == 0:
                staged_files = [p for p in staged.workdir.iterdir() if p.is_file()]
                assert staged_files and not any(read_as_nobody(p) for p in staged_files)
            stage_upload(staged, [LocalStore(store)], settings=settings)
        assert private_tree(staging) == []  # the page-hash cache included
        assert private_tree(store / "kotomi") == []
        target = data / "new.db"
        run_restore = run_cli(
            "restore",
            "latest",
            "--db",
            str(target),
            "--from",
            str(store),
            preexec_fn=lambda: os.umask(0),
        )
        assert run_restore.returncode == 0, run_restore.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        salvage = data / "salvage.db"
        recovered = run_cli("recover", str(live), str(salvage), preexec_fn=lambda: os.umask(0))
        assert recovered.returncode == 0, recovered.stderr
        assert stat.S_IMODE(salvage.stat().st_mode) == 0o600
    finally:
        os.umask(old)


# --- leftovers of killed runs ------------------------------------------------------------


def killed_child(code: str, env: dict[str, str]) -> None:
    """Run `code` in a child process that SIGKILLs itself at its end: a real killed run,
    stopped at a known point."""
    script = textwrap.dedent(code) + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    full = {**os.environ, **env}
    done = subprocess.run(
        [sys.executable, "-c", script], env=full, capture_output=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def staged_ids(staging: Path) -> list[str]:
    folder = staging / "kotomi"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and "T" in p.name)
        if folder.exists()
        else []
    )


def test_backups_killed_mid_way_never_stop_the_next_one(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=3_000_000, seed=3)
    disk = small_disk(kib=9 * 1024)  # room for one backup in the making (2x), not for four
    env = {
        "KOTOMI_DB_PATH": str(db),
        "KOTOMI_BACKUP_URL": str(tmp_path / "backups"),
        "KOTOMI_BACKUP_STAGING_DIR": str(disk.path),
    }
    for _ in range(3):
        killed_child(
            """
            from kotomi_backup_dagster.engine.backup import stage_snapshot, verify_and_archive
            from kotomi_backup_dagster.engine.settings import BackupSettings
            settings = BackupSettings.from_env()
            staged, _ = stage_snapshot(settings, durable=False, hold=True)
            verify_and_archive(staged, settings, durable=False)
            """,
            env,
        )
    # Each killed run's leftovers went when the next one began (before: three snapshots and
    # archives piled up, and the third run found no room).
    assert len(staged_ids(disk.path)) == 1
    done = run_cli("backup", "--json", env=env, preexec_fn=disk.preexec)
    assert done.returncode == 0, done.stderr
    assert staged_ids(disk.path) == []  # the dead runs' folders went first; its own after


def test_work_kept_for_reexecution_stays_until_its_room_is_needed(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=3_000_000, seed=3)
    disk = small_disk(kib=12 * 1024)
    settings = BackupSettings.from_env(
        db_path=db, urls=(str(tmp_path / "backups"),), staging_dir=disk.path
    )
    kept = []
    for _ in range(2):  # Dagster runs whose upload failed: kept for "re-execute from failure"
        staged, _ = stage_snapshot(settings)
        stage_verify(staged, settings)
        stage_archive(staged, settings)
        kept.append(staged.backup_id)
    assert staged_ids(disk.path) == kept
    result = run_backup(settings)  # needs 6 MB: the oldest kept one must go, the newer stays
    assert result.snapshot.dropped_staging == (kept[0],)
    assert staged_ids(disk.path) == [kept[1]]


def test_a_folder_another_live_process_works_in_is_never_swept(
    tmp_path: Path, kotomi_db: Path
) -> None:
    staging = tmp_path / "staging"
    env = {
        "KOTOMI_DB_PATH": str(kotomi_db),
        "KOTOMI_BACKUP_URL": str(tmp_path / "backups"),
        "KOTOMI_BACKUP_STAGING_DIR": str(staging),
    }
    script = textwrap.dedent(
        """
        import sys, time
        from kotomi_backup_dagster.engine.backup import stage_snapshot
        from kotomi_backup_dagster.engine.settings import BackupSettings
        staged, _ = stage_snapshot(BackupSettings.from_env(), durable=False, hold=True)
        print(staged.backup_id, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        busy = child.stdout.readline().strip()
        done = run_cli("backup", env=env)
        assert done.returncode == 0, done.stderr
        assert staged_ids(staging) == [busy]  # alive and locked: left alone
    finally:
        child.kill()
        child.wait()
    assert run_cli("backup", env=env).returncode == 0
    assert staged_ids(staging) == []  # killed now: swept by the next backup


def test_killed_and_concurrent_restores(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    backup_cli(kotomi_db, dest)
    target = tmp_path / "live" / "kotomi.db"
    target.parent.mkdir()
    shutil.copyfile(kotomi_db, target)
    before = sha256(target)
    env = {"KOTOMI_DB_PATH": str(target), "KOTOMI_BACKUP_URL": str(dest)}
    killed_child(  # killed after the download, before the swap
        """
        from pathlib import Path
        from kotomi_backup_dagster.engine.restore import (
            choose_backup, fetch_backup, restoring_into, staged_restore_path)
        from kotomi_backup_dagster.engine.settings import BackupSettings
        from kotomi_backup_dagster.engine.stores import open_store
        s = BackupSettings.from_env()
        target = s.require_db()
        with restoring_into(target):
            chosen = choose_backup([open_store(u) for u in s.urls], s.name)
            fetch_backup(chosen, staged_restore_path(target, chosen.manifest.backup_id))
        """,
        env,
    )
    leftovers = [p.name for p in target.parent.iterdir() if ".restore-" in p.name]
    assert leftovers and sha256(target) == before  # a database-sized leftover, live file intact

    holding = (  # a restore in progress holds the folder
        "import sys, time; from pathlib import Path;"
        "from kotomi_backup_dagster.engine.restore import restoring_into\n"
        "with restoring_into(Path(sys.argv[1]), sweep=False):\n"
        "    print('ready', flush=True); time.sleep(60)"
    )
    with python_running(holding, target):
        refused = run_cli("restore", "latest", env=env)
        assert refused.returncode == 2
        assert "another restore into" in one_line_error(refused)
        assert sorted(p.name for p in target.parent.iterdir() if ".restore-" in p.name) == sorted(
            leftovers
        )  # the live restore's files are not another's to sweep
    done = run_cli("restore", "latest", "--no-keep", env=env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in target.parent.iterdir()] == ["kotomi.db"]  # nothing left beside it


def test_a_killed_drill_leaves_no_scratch_behind(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    backup_cli(kotomi_db, dest)
    staging = tmp_path / "staging"
    env = {"KOTOMI_BACKUP_URL": str(dest), "KOTOMI_BACKUP_STAGING_DIR": str(staging)}
    killed_child(
        """
        from kotomi_backup_dagster.engine import drill
        from kotomi_backup_dagster.engine.layout import list_backups
        from kotomi_backup_dagster.engine.restore import fetch_backup, Chosen
        from kotomi_backup_dagster.engine.settings import BackupSettings
        from kotomi_backup_dagster.engine.stores import open_store
        from kotomi_backup_dagster.engine.fsutil import scratch_folder
        s = BackupSettings.from_env()
        store = open_store(s.urls[0])
        m = list_backups(store, s.name).backups[0]
        with scratch_folder(s.staging_dir, "kotomi-drill-") as tmp:
            fetch_backup(Chosen(store, m), tmp / "kotomi.db")
            import os, signal; os.kill(os.getpid(), signal.SIGKILL)
        """,
        env,
    )
    assert [p.name for p in staging.iterdir() if p.name.startswith("kotomi-drill-")]
    done = run_cli("drill", env=env)
    assert done.returncode == 0, done.stderr
    assert not [p.name for p in staging.iterdir() if p.name.startswith("kotomi-drill-")]


# --- full disks ---------------------------------------------------------------------------


@pytest.fixture(params=["tmpfs", "rlimit"])
def full_disk_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both kinds of full disk: a tmpfs (free space seen before the work) and a file-size
    limit (the write itself fails half-way: the short-write path)."""
    if request.param == "rlimit":
        monkeypatch.setenv("TEST_FULL_DISK", "rlimit")
    return str(request.param)


def test_a_full_scratch_disk_is_never_recorded_as_a_damaged_backup(
    tmp_path: Path, small_disk: SmallDisk, full_disk_kind: str
) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=3_000_000, seed=5)
    dest = tmp_path / "backups"
    backup_id = backup_cli(db, dest, "--format", "paged")
    disk = small_disk(kib=1024)  # the 3 MB database does not fit
    env = {"KOTOMI_BACKUP_URL": str(dest), "KOTOMI_BACKUP_STAGING_DIR": str(disk.path)}
    proc = run_cli("drill", env=env, preexec_fn=disk.preexec)
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc)
    assert "disk full (needs about 3 MiB" in line, line
    assert not (dest / "kotomi" / backup_id / "drills").exists()  # nothing said of the backup
    assert not [p for p in disk.path.iterdir() if p.name.startswith("kotomi-drill-")]


@pytest.mark.parametrize("backup_format", ["full", "paged"])
def test_a_full_restore_disk_changes_nothing_and_says_so(
    tmp_path: Path, small_disk: SmallDisk, full_disk_kind: str, backup_format: str
) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=3_000_000, seed=5)
    dest = tmp_path / "backups"
    backup_cli(db, dest, "--format", backup_format)
    disk = small_disk(kib=2048)
    target = disk.path / "kotomi.db"
    target.write_bytes(db.read_bytes()[: 1024 * 1024])  # the live file, 1 MiB: fits
    before = sha256(target)
    proc = run_cli(
        "restore",
        "latest",
        "--db",
        str(target),
        "--from",
        str(dest),
        "--force",
        preexec_fn=disk.preexec,
    )
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in one_line_error(proc)
    assert sha256(target) == before
    assert [p.name for p in disk.path.iterdir()] == ["kotomi.db"]


def test_a_full_staging_disk_fails_the_backup_in_one_line(
    tmp_path: Path, small_disk: SmallDisk, full_disk_kind: str
) -> None:
    db = tmp_path / "kotomi.db"
    generate_demo_database(db, size_bytes=3_000_000, seed=5)
    disk = small_disk(kib=1024)
    proc = run_cli(
        "backup",
        "--db",
        str(db),
        "--to",
        str(tmp_path / "backups"),
        env={"KOTOMI_BACKUP_STAGING_DIR": str(disk.path)},
        preexec_fn=disk.preexec,
    )
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in one_line_error(proc)
    assert staged_ids(disk.path) == []
    assert not (tmp_path / "backups" / "kotomi").exists() or not any(
        (tmp_path / "backups" / "kotomi").iterdir()
    )


# --- a store holding garbage, symlinks and tampered sizes -----------------------------------


def manifest_of(dest: Path, backup_id: str) -> Path:
    return dest / "kotomi" / backup_id / "manifest.json"


def rewrite(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(data))


def test_bad_entries_are_listed_as_unreadable_and_never_stop_the_others(
    kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    good = backup_cli(kotomi_db, dest)
    ids = [backup_cli(kotomi_db, dest, "--format", "paged") for _ in range(4)]
    as_dir, bad_time, bad_packs, traversal = ids
    manifest_of(dest, as_dir).unlink()
    manifest_of(dest, as_dir).mkdir()
    rewrite(manifest_of(dest, bad_time), created_at="garbage")
    rewrite(manifest_of(dest, bad_packs), paged__packs=["a", "b"])
    rewrite(manifest_of(dest, traversal), archive__key="../../../etc/passwd")
    env = {"KOTOMI_BACKUP_URL": str(dest), "KOTOMI_BACKUP_KEEP_LAST": "1"}

    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)["destinations"][0]
    assert [b["backup_id"] for b in report["backups"]] == [good]
    assert report["unreadable"] == sorted(ids)
    assert "not a file" in report["problems"][as_dir]
    assert "created_at" in report["problems"][bad_time]
    assert "packs" in report["problems"][bad_packs]
    assert "archive key" in report["problems"][traversal]

    target = tmp_path / "restored.db"
    restored = run_cli("restore", "latest", "--db", str(target), "--json", env=env)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == good
    warned = restored.stderr.strip().splitlines()
    assert len(warned) == 4 and all("unreadable" in w for w in warned), restored.stderr
    assert [i for i in ids if i in restored.stderr] == ids

    drilled = run_cli("drill", "all", "--json", env=env)
    assert drilled.returncode == 0, drilled.stderr
    assert [d["backup_id"] for d in json.loads(drilled.stdout)["drills"]] == [good]
    pruned = run_cli("prune", "--json", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert all((dest / "kotomi" / i).exists() for i in ids)  # kept for inspection


def test_nothing_follows_a_symlink_out_of_a_local_store(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    older = backup_cli(kotomi_db, dest)
    newer = backup_cli(kotomi_db, dest)
    outside = tmp_path / "elsewhere"
    shutil.copytree(dest / "kotomi" / older, outside / older)
    shutil.rmtree(dest / "kotomi" / older)
    (dest / "kotomi" / older).symlink_to(outside / older)
    kept = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    env = {"KOTOMI_BACKUP_URL": str(dest), "KOTOMI_BACKUP_KEEP_LAST": "1"}

    listed = run_cli("list", "--json", env=env)
    report = json.loads(listed.stdout)["destinations"][0]
    assert report["unreadable"] == [older] and "symlink" in report["problems"][older]
    for _ in range(2):  # and again: a prune never fails for good on it
        pruned = run_cli("prune", env=env)
        assert pruned.returncode == 0, pruned.stderr
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == kept

    (tmp_path / "drills-elsewhere").mkdir()
    (dest / "kotomi" / newer / "drills").symlink_to(tmp_path / "drills-elsewhere")
    drilled = run_cli("drill", env=env)
    assert drilled.returncode == 1
    assert "symlink" in one_line_error(drilled)
    assert list((tmp_path / "drills-elsewhere").iterdir()) == []


@pytest.mark.parametrize("consistent", [False, True])
def test_a_tampered_size_is_refused_before_anything_is_allocated(
    kotomi_db: Path, tmp_path: Path, consistent: bool
) -> None:
    dest = tmp_path / "backups"
    backup_id = backup_cli(kotomi_db, dest, "--format", "paged")
    page_size = json.loads(manifest_of(dest, backup_id).read_text())["page_size"]
    huge = 10**12 // page_size * page_size
    changes: dict[str, object] = {"db_size": huge}
    if consistent:  # the size agrees with the page count: only the disk can say no
        changes["page_count"] = huge // page_size
    rewrite(manifest_of(dest, backup_id), **changes)
    target = tmp_path / "live" / "kotomi.db"
    target.parent.mkdir()
    shutil.copyfile(kotomi_db, target)
    before = sha256(target)
    proc = run_cli(
        "restore", "latest", "--db", str(target), "--from", str(dest), "--force", timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc)
    assert ("disk full" in line) if consistent else ("pages of" in line), line
    assert sha256(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["kotomi.db"]


# --- smaller ones ---------------------------------------------------------------------------


def test_a_staging_dir_that_is_a_file_is_one_configuration_line(
    kotomi_db: Path, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "staging"
    not_a_dir.write_text("")
    proc = run_cli(
        "backup",
        "--db",
        str(kotomi_db),
        "--to",
        str(tmp_path / "b"),
        env={"KOTOMI_BACKUP_STAGING_DIR": str(not_a_dir)},
    )
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "KOTOMI_BACKUP_STAGING_DIR" in line and str(not_a_dir) in line


def test_a_file_url_with_an_escaped_space_is_that_folder(kotomi_db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "a b"
    proc = run_cli("backup", "--db", str(kotomi_db), "--to", f"file://{tmp_path}/a%20b")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "kotomi").is_dir() and not (tmp_path / "a%20b").exists()


def test_a_failed_snapshot_leaves_no_staging_folder(kotomi_db: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(kotomi_db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")  # nobody can read it until the deadline
    try:
        proc = run_cli(
            "backup",
            "--db",
            str(kotomi_db),
            "--to",
            str(tmp_path / "b"),
            env={
                "KOTOMI_BACKUP_SNAPSHOT_TIMEOUT": "1",
                "KOTOMI_BACKUP_STAGING_DIR": str(tmp_path / "staging"),
            },
        )
    finally:
        conn.rollback()
        conn.close()
    assert proc.returncode == 1, proc.stderr
    assert staged_ids(tmp_path / "staging") == []


def test_an_idle_rollback_journal_connection_counts_as_in_use(
    kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    backup_cli(kotomi_db, dest)
    conn = sqlite3.connect(kotomi_db)
    conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    conn.close()
    reading = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
        "c.execute('SELECT count(*) FROM comments').fetchone(); print('ready', flush=True);"
        "time.sleep(60)"
    )
    with python_running(reading, kotomi_db):
        before = sha256(kotomi_db)
        proc = run_cli("restore", "latest", "--db", str(kotomi_db), "--from", str(dest))
        assert proc.returncode == 2
        assert "stop Kotomi first" in one_line_error(proc)
        assert sha256(kotomi_db) == before


def test_ctrl_c_during_a_restore_says_what_happened_and_leaves_nothing(
    tmp_path: Path, kotomi_db: Path, s3_bucket: str, aws_env: Endpoint, proxy_for: Proxies
) -> None:
    url = f"s3://{s3_bucket}/p"
    backup_cli(kotomi_db, url)
    target = tmp_path / "live" / "kotomi.db"
    target.parent.mkdir()
    shutil.copyfile(kotomi_db, target)
    conn = sqlite3.connect(target)
    conn.execute("DELETE FROM comments WHERE rowid % 2 = 0")
    conn.commit()
    conn.close()
    before = sha256(target)
    # The archive's download never answers, so the Ctrl-C lands in the middle of the restore
    # however fast or slow the machine is.
    proxy = proxy_for(aws_env)
    proxy.rules.append(Rule(lambda r: r.method == "GET" and r.path.endswith(".zst"), "stall"))
    # SIGINT as a terminal gives it: a job started in the background (`make test &`, CI
    # runners) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = popen_cli(
        "restore", "latest", "--db", str(target), "--from", url,
        env={"AWS_ENDPOINT_URL": proxy.url}, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    while not proxy.faults("stall"):  # a hang ends at pytest's timeout, not at a deadline here
        assert proc.poll() is None, "the restore ended before its download began"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert "interrupted; the database was not replaced" in stderr
    assert sha256(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["kotomi.db"]


def test_only_the_newest_staged_backups_are_kept_for_reexecution(
    tmp_path: Path, kotomi_db: Path
) -> None:
    settings = BackupSettings.from_env(
        db_path=kotomi_db, urls=(str(tmp_path / "backups"),), staging_dir=tmp_path / "staging"
    )
    assert settings.keep_staged == 3  # the default
    made, dropped = [], []
    start = datetime.now(UTC)
    for n in range(5):  # hourly Dagster snapshots whose uploads all failed
        staged, snap = stage_snapshot(settings, now=start + timedelta(hours=n))
        made.append(staged.backup_id)
        dropped.append(snap.dropped_staging)
    assert staged_ids(tmp_path / "staging") == made[-3:]
    assert dropped == [(), (), (), (made[0],), (made[1],)]
    with pytest.raises(ConfigError, match="KOTOMI_BACKUP_KEEP_STAGED"):
        BackupSettings.from_env({"KOTOMI_BACKUP_KEEP_STAGED": "0"})
