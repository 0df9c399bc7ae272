"""Faults against the paged format: random backups (both formats), prunes, restores, drills
and SIGKILLs in between; a repack killed at every one of its store changes; a flipped byte in a
pack; what a pack upload killed half-way leaves behind.

The random run works under the most careless umask (0): every file it makes that holds
database content or page hashes must still be 0600 in 0700 folders, and no leftover of a
killed command may outlive the next command of its kind.

What must hold whatever is killed when (the issue's words): a kept backup is never lost, a
restore never yields a file whose sha256 differs from its manifest, and no kept backup ever
names a deleted pack. Prunes that must remove packs run in a child process with `now` two days
ahead (packs are removed only when older than a day, by the UTC time in their name); that child
announces each store change on stderr and can SIGKILL itself before any given one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi
from kotomi_backup_dagster.engine.errors import BackupError
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.manifest import Manifest, is_backup_id
from kotomi_backup_dagster.engine.paged.packgc import ORPHAN_AGE, REPACK_BELOW
from kotomi_backup_dagster.engine.paged.packs import is_old_pack
from kotomi_backup_dagster.engine.paged.publish import load_page_map
from kotomi_backup_dagster.engine.prune import plan_store, prune_store
from kotomi_backup_dagster.engine.restore import Chosen, fetch_backup
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.stores import LocalStore, StoredObject
from tests.conftest import AgeKey, popen_cli, run_cli

NAME = "kotomi"
KEEP_FIELDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")

PRUNE_CHILD = '''\
"""Prune a local store as of a given time; for fault tests.

argv: store root, now (ISO 8601), policy (RetentionPolicy kwargs as JSON), die_at.
Each store change is announced on stderr ("change N put|delete KEY") just before it is made;
with die_at >= 0 the process SIGKILLs itself before change number die_at (0-based), so that
exactly die_at changes have landed. The result is printed as JSON on stdout.
"""
import json
import os
import signal
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.stores import LocalStore, StoredObject

root, now, policy, die_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class Store(LocalStore):
    changes = 0

    def _change(self, what, key):
        if self.changes == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.changes += 1
        sys.stderr.write(f"change {self.changes} {what} {key}\\n")
        sys.stderr.flush()

    def put_file(self, key, source, *, sha256):
        self._change("put", key)
        return super().put_file(key, source, sha256=sha256)

    def put_bytes(self, key, data):
        self._change("put", key)
        return super().put_bytes(key, data)

    def delete(self, key):
        self._change("delete", key)
        super().delete(key)


store = Store(Path(root))
result = prune_store(
    store, "kotomi", RetentionPolicy(**json.loads(policy)), now=datetime.fromisoformat(now)
)
report = {"removed": result.removed, "packs": asdict(result.packs), "changes": store.changes}
print(json.dumps(report))
'''


# Child processes -------------------------------------------------------------------------


@pytest.fixture
def prune_child(tmp_path: Path) -> Path:
    path = tmp_path / "prune_child.py"
    path.write_text(PRUNE_CHILD)
    return path


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The children's environment: this test's XDG_CACHE_HOME (one page-hash cache for all its
    backups, so they are incremental) and its own TMPDIR (a killed repack leaves its temp dir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
    assert env["XDG_CACHE_HOME"].startswith(str(tmp_path))
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    env.update(extra)
    return env


def retention(policy: dict[str, int]) -> RetentionPolicy:
    get = policy.get
    return RetentionPolicy(
        keep_last=get("keep_last", 0),
        keep_hourly=get("keep_hourly", 0),
        keep_daily=get("keep_daily", 0),
        keep_weekly=get("keep_weekly", 0),
        keep_monthly=get("keep_monthly", 0),
        keep_yearly=get("keep_yearly", 0),
    )


def policy_env(policy: dict[str, int]) -> dict[str, str]:
    """Every KOTOMI_BACKUP_KEEP_* set: unset ones would take the defaults (daily 7...)."""
    return {f"KOTOMI_BACKUP_KEEP_{f.upper()}": str(policy.get(f"keep_{f}", 0)) for f in KEEP_FIELDS}


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    running_at_kill: bool = False  # the test's SIGKILL found it still running

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def careless() -> None:
    """The child's umask: none at all (files 0666, folders 0777 unless the tool says so)."""
    os.umask(0)


def cli(*args: str, env: dict[str, str]) -> Run:
    proc = run_cli(*args, env=env, preexec_fn=careless)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def careless_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """The CLI left running, with no umask, its output read through pipes."""
    return popen_cli(
        *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=careless
    )


def kill_now(proc: subprocess.Popen[str]) -> Run:
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return Run(proc.returncode, out, err, running_at_kill=running)


def store_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`, temp files too, with its size and mtime."""
    files: dict[str, tuple[int, int]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                files[path] = (st.st_size, st.st_mtime_ns)
    return files


def wait_for(
    proc: subprocess.Popen[str], happened: Callable[[], object], timeout: float = 30.0
) -> None:
    """Poll (busily: the steps take milliseconds) until `happened()` or the process ends."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not happened():
        pass


def staging_root(env: dict[str, str]) -> Path:
    return Path(env["XDG_CACHE_HOME"]) / "kotomi-backup" / "staging"


def staged_backups(env: dict[str, str]) -> set[str]:
    """Backups begun on this machine (a staging dir each; a killed one leaves its own)."""
    staging = staging_root(env) / NAME
    return {n for n in os.listdir(staging) if is_backup_id(n)} if staging.is_dir() else set()


def scratch_dirs(parent: Path, prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(prefix)) if parent.is_dir() else []


def not_private(*roots: Path) -> list[str]:
    """What under `roots` is not 0600 (a file) or 0700 (a folder)."""
    wrong = []
    for root in roots:
        for directory, folders, files in os.walk(root):
            for name, want in [(f, 0o700) for f in folders] + [(f, 0o600) for f in files]:
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    mode = os.lstat(path).st_mode & 0o777
                    if mode != want:
                        wrong.append(f"{path} {mode:o}")
    return wrong


def backup_cli(
    db: Path,
    store: Path,
    env: dict[str, str],
    kill: str | None,
    rng: random.Random,
    backup_format: str = "paged",
) -> Run:
    """`kotomi-backup backup --format ...`; with `kill`, SIGKILLed: `staging` soon after its
    snapshot began, `store` as soon as anything appeared on the store (a pack's temp file,
    usually), `delay` after a random time."""
    args = ["backup", "--db", str(db), "--to", str(store), "--format", backup_format, "--json"]
    proc = careless_cli(*args, env=env)
    if kill is None:
        out, err = proc.communicate(timeout=120)
        return Run(proc.returncode, out, err)
    if kill == "delay":
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(rng.uniform(0.2, 0.6))
    elif kill == "staging":
        before = staged_backups(env)
        wait_for(proc, lambda: staged_backups(env) - before)
        time.sleep(rng.uniform(0.0, 0.08))
    else:
        before_store = store_state(store)
        wait_for(proc, lambda: store_state(store) != before_store)
        time.sleep(rng.choice([0.0, 0.0, 0.0, 0.001]))
    return kill_now(proc)


def prune_in_child(
    script: Path,
    store: Path,
    policy: dict[str, int],
    now: datetime,
    env: dict[str, str],
    *,
    die_at: int = -1,
    kill_at_change: int | None = None,
    linger: float = 0.0,
) -> Run:
    """The prune child (PRUNE_CHILD). `die_at`: it kills itself before that change;
    `kill_at_change`: this test kills it as it announces that change (1-based), so the kill
    lands while the change is being made or just after."""
    cmd = [sys.executable, str(script), str(store), now.isoformat(), json.dumps(policy)]
    proc = subprocess.Popen(
        [*cmd, str(die_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=careless,
    )
    if kill_at_change is None:
        out, err = proc.communicate(timeout=120)
        return Run(proc.returncode, out, err, running_at_kill=proc.returncode == -signal.SIGKILL)
    assert proc.stderr is not None
    seen = 0
    while line := proc.stderr.readline():
        seen += line.startswith("change ")
        if seen == kill_at_change:
            time.sleep(linger)
            break
    return kill_now(proc)


def prune_cli(
    store: Path, policy: dict[str, int], env: dict[str, str], kill: bool, rng: random.Random
) -> Run:
    """`kotomi-backup prune` (the real clock: no pack is old enough to go, repacks happen);
    with `kill`, SIGKILLed as soon as the store changes."""
    proc = careless_cli("prune", "--to", str(store), "--json", env={**env, **policy_env(policy)})
    if not kill:
        out, err = proc.communicate(timeout=120)
        return Run(proc.returncode, out, err)
    before = store_state(store)
    wait_for(proc, lambda: store_state(store) != before)
    time.sleep(rng.choice([0.0, 0.0, 0.001, 0.004]))
    return kill_now(proc)


# The store's state and the invariants ------------------------------------------------------


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_digest(conn: sqlite3.Connection) -> str:
    """Every row of the database (its SQL dump): what a restore must give back."""
    digest = hashlib.sha256()
    for line in conn.iterdump():
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def file_content_digest(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return content_digest(conn)
    finally:
        conn.close()


def pack_files_on(store: Path) -> set[str]:
    """Packs as a listing sees them (temp files of killed writes start with '.')."""
    packs = store / NAME / "packs"
    return (
        {p.name for p in packs.iterdir() if not p.name.startswith(".")} if packs.is_dir() else set()
    )


def named_packs(manifests: list[Manifest]) -> set[str]:
    return {f for m in manifests for f in m.pack_files()}


def mostly_dead(store: Path, manifests: list[Manifest], now: datetime) -> list[str]:
    """Named packs older than the grace of which the listed backups need less than
    REPACK_BELOW of the pages (what a prune at `now` must have repacked)."""
    used: dict[str, set[int]] = {}
    pages: dict[str, int] = {}
    for m in (m for m in manifests if m.is_paged):
        for pack, entries in load_page_map(LocalStore(store), m).entries_used().items():
            used.setdefault(pack, set()).update(entries)
        pages.update({f: int(info["pages"]) for f, info in m.pack_files().items()})
    return sorted(
        p
        for p, e in used.items()
        if len(e) < REPACK_BELOW * pages[p] and is_old_pack(p, now, ORPHAN_AGE)
    )


def old_unnamed_packs(store: Path, manifests: list[Manifest], now: datetime) -> list[str]:
    return sorted(
        p for p in pack_files_on(store) - named_packs(manifests) if is_old_pack(p, now, ORPHAN_AGE)
    )


class CountingStore(LocalStore):
    """A local store that counts its changes."""

    changes = 0

    def put_file(self, key: str, source: Path, *, sha256: str) -> StoredObject:
        self.changes += 1
        return super().put_file(key, source, sha256=sha256)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        self.changes += 1
        return super().put_bytes(key, data)

    def delete(self, key: str) -> None:
        self.changes += 1
        super().delete(key)


def rehearse_prune(store: Path, policy: dict[str, int], now: datetime, scratch: Path) -> int:
    """The number of store changes a whole prune would make now (run on a copy)."""
    if not store.exists():
        return 0
    shutil.copytree(store, scratch)
    try:
        copy = CountingStore(scratch)
        prune_store(copy, NAME, retention(policy), now=now)
        return copy.changes
    finally:
        shutil.rmtree(scratch)


def repacked_at(manifests: list[Manifest]) -> dict[str, str | None]:
    return {m.backup_id: (m.paged or {}).get("repacked_at") for m in manifests}


def ids(manifests: list[Manifest]) -> set[str]:
    return {m.backup_id for m in manifests}


@dataclass
class Invariants:
    """What must hold after every operation, killed or not.

    (a) every listed backup restores to exactly its manifest's sha256, and that sha256 is the
        one the backup had when it was made; (b) no backup that must be kept is gone; (c) every
        pack (and page map) a listed manifest names is on the store, whole; (d) no manifest is
        torn (unreadable)."""

    store: Path
    scratch: Path
    must_keep: set[str] = field(default_factory=set)
    db_sha: dict[str, str] = field(default_factory=dict)  # at backup time; never changes
    restored: dict[str, tuple[object, ...]] = field(default_factory=dict)
    restores: int = 0

    def check(self, where: str) -> list[Manifest]:
        listing = list_backups(LocalStore(self.store), NAME)
        assert not listing.unreadable, f"{where}: unreadable (torn) manifests {listing.unreadable}"
        lost = self.must_keep - ids(listing.backups)
        assert not lost, f"{where}: kept backups are gone: {sorted(lost)}"
        for m in listing.backups:
            first = self.db_sha.setdefault(m.backup_id, m.db_sha256)
            assert m.db_sha256 == first, f"{where}: {m.backup_id}'s db_sha256 changed"
            archive = self.store / m.archive.key  # a paged backup's page map, or the archive
            assert archive.is_file(), f"{where}: {m.backup_id}'s {archive} is gone"
            assert m.is_paged or archive.stat().st_size == m.archive.size, f"{where}: torn"
            stamp: list[object] = [m.to_json(), archive.stat().st_ino]
            for pack, info in sorted(m.pack_files().items()):
                path = self.store / NAME / "packs" / pack
                assert path.is_file(), f"{where}: {m.backup_id} names pack {pack}, which is gone"
                st = path.stat()
                assert st.st_size == int(info["size"]), f"{where}: pack {pack} is torn"
                stamp.append((pack, st.st_ino, st.st_mtime_ns))
            # Restored again whenever its manifest or anything it names changed.
            if self.restored.get(m.backup_id) != tuple(stamp):
                self.restore(m, where)
                self.restored[m.backup_id] = tuple(stamp)
        return listing.backups

    def restore(self, m: Manifest, where: str) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        dest = self.scratch / f"{m.backup_id}.db"
        try:
            fetch_backup(Chosen(LocalStore(self.store), m), dest)
        except BackupError as exc:
            pytest.fail(f"{where}: listed backup {m.backup_id} does not restore: {exc}")
        assert file_sha256(dest) == m.db_sha256 == self.db_sha[m.backup_id], where
        dest.unlink()
        self.restores += 1


def cli_listing(store: Path, env: dict[str, str], where: str) -> set[str]:
    """(d) as the command shows it: `list --json` names no unreadable manifest."""
    shown = cli("list", "--to", str(store), "--json", env=env)
    assert shown.returncode == 0, f"{where}: list failed: {shown.stderr}"
    dest = json.loads(shown.stdout)["destinations"][0]
    assert dest["unreadable"] == [], f"{where}: list shows torn manifests {dest['unreadable']}"
    return {b["backup_id"] for b in dest["backups"]}


# Operations on the live database ------------------------------------------------------------


def kotomi_requests(writer: KotomiWriter, count: int) -> None:
    for _ in range(count):
        writer.request()


def bulk_edit(conn: sqlite3.Connection, rng: random.Random, share: float) -> None:
    """An admin rewriting (e.g. redacting) a share of all comments in one transaction."""
    rows = conn.execute("SELECT id, length(text) FROM comments").fetchall()
    letters = "abcdefghijklmnopqrstuvwxyz     "
    conn.execute("BEGIN IMMEDIATE")
    for comment_id, length in rng.sample(rows, int(len(rows) * share)):
        text = "".join(rng.choices(letters, k=max(1, length)))
        conn.execute(
            "UPDATE comments SET text = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ?",
            (text, comment_id),
        )
    conn.execute("COMMIT")


def random_policy(rng: random.Random) -> dict[str, int]:
    roll = rng.random()
    if roll < 0.6:
        return {"keep_last": rng.randint(1, 3)}
    if roll < 0.85:
        return {"keep_last": rng.randint(0, 1), "keep_hourly": rng.randint(1, 2)}
    return {"keep_last": rng.randint(0, 2), "keep_daily": 1}


# 1. Random operations -----------------------------------------------------------------------

ROUNDS = 11  # each: a change to the database, a backup, a prune, now and then a restore


def schedule(rng: random.Random) -> list[str]:
    """About 35 operations, in rounds so that every prune has something to do. Two VACUUMs
    and two bulk edits at least (they change most pages: old packs die, repacks follow)."""
    changes = ["vacuum", "vacuum", "bulk_edit", "bulk_edit"]
    changes += rng.choices(["write", "bulk_edit", "vacuum"], [3, 1, 1], k=ROUNDS - len(changes))
    rng.shuffle(changes)
    ops = ["backup"]
    for change in changes:
        ops += [change, "backup", "prune"] + ["restore"] * (rng.random() < 0.3)
        ops += ["drill"] * (rng.random() < 0.3)
    return [*ops, "drill", "restore"]  # at least one of each, at the end


@pytest.mark.parametrize("backup_format", ["paged", "full"])
def test_random_operations_never_lose_a_kept_backup_nor_restore_a_wrong_file(
    kotomi_db: Path, tmp_path: Path, prune_child: Path, backup_format: str
) -> None:
    rng = random.Random(20261127)
    store = tmp_path / "store"
    env = child_env(tmp_path)
    inv = Invariants(store, tmp_path / "scratch")
    conn = connect_like_kotomi(kotomi_db)
    writer = KotomiWriter(conn, random.Random(rng.random()))
    rows: dict[str, str] = {}  # backup id -> content digest of the live database at backup time
    stats: Counter[str] = Counter()
    log: list[str] = []
    try:
        for step, op in enumerate(schedule(rng)):
            listed = inv.check(f"before op {step}")
            before = ids(listed)
            assert before == inv.must_keep
            where = f"op {step} {op}"
            if op == "write":
                count = rng.randint(20, 200)
                kotomi_requests(writer, count)
                log.append(f"{step}: {count} Kotomi requests")
            elif op == "bulk_edit":
                share = rng.uniform(0.3, 1.0)
                bulk_edit(conn, rng, share)
                log.append(f"{step}: bulk edit of {share:.0%} of the comments")
            elif op == "vacuum":
                conn.execute("VACUUM")
                log.append(f"{step}: VACUUM")
            elif op == "backup":
                # Killed often until enough kills have landed mid-backup, then now and then.
                wanted = 0.9 if stats["backup interrupted"] < 3 else 0.4
                trigger: str | None = rng.choice(["staging", "store", "store", "delay"])
                trigger = trigger if step and rng.random() < wanted else None
                digest = content_digest(conn)  # nothing writes while the backup runs
                state = store_state(store)
                staged = staged_backups(env)
                kind = backup_format
                run = backup_cli(kotomi_db, store, env, trigger, rng, kind)
                log.append(f"{step}: {kind} backup (kill {trigger}) -> {run.returncode}")
                where += f" {kind} (kill {trigger})"
                if not run.killed:
                    assert run.returncode == 0, f"{where}: {run.stderr}"
                    made = json.loads(run.stdout)
                    inv.db_sha[made["backup_id"]] = made["manifest"]["db_sha256"]
                    stats[f"backup by {made['snapshot_method']}"] += 1
                    stats["backup completed"] += 1
                    # What killed backups left went when this one began; its own after it.
                    assert staged_backups(env) == set(), f"{where}: staging left behind"
                after = ids(inv.check(where))
                new = after - before
                assert len(new) <= 1 and before <= after, f"{where}: {before} -> {after}"
                if not run.killed:
                    assert new == {made["backup_id"]}, where
                elif new:
                    stats["backup killed after its manifest landed"] += 1
                elif run.running_at_kill and staged_backups(env) - staged:
                    stats["backup interrupted"] += 1  # it had begun: its staging dir is there
                    stats["backup killed after writing to the store"] += store_state(store) != state
                rows.update(dict.fromkeys(new, digest))
                inv.must_keep = after
            elif op == "prune":
                policy = random_policy(rng)
                ahead = rng.random() < 0.75  # else the CLI, with the real clock
                now = datetime.now(UTC) + timedelta(days=2 if ahead else 0)
                plan, _ = plan_store(LocalStore(store), NAME, retention(policy), now=now)
                keep = {p.manifest.backup_id for p in plan if p.keep}
                inv.must_keep = keep  # the others this prune may remove, and only those
                # How many store changes a whole prune makes now (on a copy): kill points.
                changes = rehearse_prune(store, policy, now, tmp_path / "rehearsal")
                wanted = 0.9 if stats["prune interrupted"] < 3 else 0.5
                kill = changes > 0 and rng.random() < wanted
                state = store_state(store)
                packs_before = pack_files_on(store)
                switched_before = repacked_at(listed)
                if not ahead:
                    how = "cli"
                    run = prune_cli(store, policy, env, kill, rng)
                elif kill and changes > 1 and rng.random() < 0.6:
                    die_at = rng.randrange(1, changes)
                    how = f"dies before change {die_at + 1} of {changes}"
                    run = prune_in_child(prune_child, store, policy, now, env, die_at=die_at)
                elif kill:
                    at = rng.randint(1, max(1, changes - 1))
                    linger = rng.choice([0.0, 0.0005, 0.002])
                    how = f"killed at change {at} of {changes} (+{linger * 1000:.1f} ms)"
                    run = prune_in_child(
                        prune_child, store, policy, now, env, kill_at_change=at, linger=linger
                    )
                else:
                    how = f"child ({changes} changes)"
                    run = prune_in_child(prune_child, store, policy, now, env)
                log.append(f"{step}: prune {policy} {how} -> {run.returncode}")
                where += f" {policy} {how}"
                manifests = inv.check(where)
                after = ids(manifests)
                assert keep <= after <= before, (
                    f"{where}: planned to keep {sorted(keep)} of {sorted(before)}, "
                    f"{sorted(after)} are left"
                )
                if run.killed:
                    # Mid-prune: it had changed the store, and a whole prune still has work.
                    if (
                        run.running_at_kill
                        and store_state(store) != state
                        and rehearse_prune(store, policy, now, tmp_path / "rehearsal")
                    ):
                        stats["prune interrupted"] += 1
                else:
                    assert run.returncode == 0, f"{where}: {run.stderr}"
                    result = json.loads(run.stdout)
                    result = result if ahead else result["destinations"][0]
                    assert after == keep and set(result["removed"]) == before - keep, where
                    assert not mostly_dead(store, manifests, now), f"{where}: mostly-unused packs"
                    if ahead:
                        assert not old_unnamed_packs(store, manifests, now), where
                # What happened, killed or not: packs gone, packs written, backups switched.
                stats["packs removed"] += len(packs_before - pack_files_on(store))
                stats["packs written by a repack"] += len(pack_files_on(store) - packs_before)
                switched = repacked_at(manifests)
                stats["manifests switched by a repack"] += sum(
                    1 for i, at in switched.items() if at and at != switched_before.get(i)
                )
                inv.must_keep = after
            elif op == "drill":
                if not listed:
                    continue
                chosen = rng.choice(listed)
                drills = staging_root(env)
                args = ["drill", chosen.backup_id, "--from", str(store), "--json"]
                wanted = 0.9 if stats["drill killed"] < 1 else 0.3
                if rng.random() < wanted:  # killed once its scratch copy is being written
                    before = scratch_dirs(drills, "kotomi-drill-")
                    proc = careless_cli(*args, env=env)
                    wait_for(
                        proc,
                        lambda d=drills, b=before: scratch_dirs(d, "kotomi-drill-") != b,
                    )
                    run = kill_now(proc)
                    stats["drill killed"] += run.killed
                else:
                    run = cli(*args, env=env)
                    assert run.returncode == 0, f"{where}: {run.stderr}"
                    (drilled,) = json.loads(run.stdout)["drills"]
                    assert drilled["ok"] and drilled["backup_id"] == chosen.backup_id, where
                    assert scratch_dirs(drills, "kotomi-drill-") == [], f"{where}: scratch left"
                    stats["drill"] += 1
                log.append(f"{step}: drill {chosen.backup_id} -> {run.returncode}")
            else:
                if not listed:
                    continue
                chosen = rng.choice(listed)
                if rng.random() < 0.3:  # the newest backup created before a time
                    before_time = chosen.created + timedelta(seconds=1)
                    chosen = next(m for m in listed if m.created < before_time)
                    which = ["latest", "--before", before_time.strftime("%Y-%m-%dT%H:%M:%SZ")]
                else:
                    which = [chosen.backup_id]
                target = tmp_path / "restores" / f"{step}" / "kotomi.db"
                target.parent.mkdir(parents=True)
                args = ["restore", *which, "--db", str(target), "--from", str(store), "--json"]
                wanted = 0.9 if stats["restore killed"] < 1 else 0.3
                if rng.random() < wanted:  # killed while it writes the restored copy beside it
                    proc = careless_cli(*args, env=env)
                    wait_for(
                        proc,
                        lambda t=target: any(".restore-" in n for n in os.listdir(t.parent)),
                    )
                    killed = kill_now(proc)
                    stats["restore killed"] += killed.killed
                    log.append(f"{step}: restore {' '.join(which)} killed -> {killed.returncode}")
                run = cli(*args, env=env)  # the next restore: sweeps what a killed one left
                log.append(f"{step}: restore {' '.join(which)} -> {run.returncode}")
                assert os.listdir(target.parent) == ["kotomi.db"], f"{where}: left beside it"
                assert os.stat(target).st_mode & 0o777 == 0o600, where
                assert run.returncode == 0, f"{where}: {run.stderr}"
                assert json.loads(run.stdout)["backup_id"] == chosen.backup_id, where
                assert file_sha256(target) == inv.db_sha[chosen.backup_id], where
                if chosen.backup_id in rows:
                    assert file_content_digest(target) == rows[chosen.backup_id], where
                shutil.rmtree(target.parent)
                stats["restores (command)"] += 1
            if op in ("backup", "prune") and run.killed:
                shown = cli_listing(store, env, where)
                assert shown == ids(list_backups(LocalStore(store), NAME).backups), where
            if op == "prune" and not run.killed:
                repacks = scratch_dirs(Path(env["TMPDIR"]), "kotomi-repack-")
                assert repacks == [], f"{where}: a killed repack's scratch outlived a prune"
            assert not_private(staging_root(env), store) == [], where
            stats[op] += 1
    except BaseException:
        print("\n".join(log))
        raise
    finally:
        conn.close()

    # A prune that completes, two days ahead: only what the kept backups name stays.
    now = datetime.now(UTC) + timedelta(days=2)
    newest = sorted(inv.must_keep, reverse=True)[:2]
    inv.must_keep = set(newest)
    done = prune_in_child(prune_child, store, {"keep_last": 2}, now, env)
    assert done.returncode == 0, done.stderr
    manifests = inv.check("final prune")
    assert ids(manifests) == set(newest)
    assert pack_files_on(store) == named_packs(manifests)
    assert not mostly_dead(store, manifests, now)
    assert cli_listing(store, env, "end") == ids(manifests)
    for m in manifests:  # the command's restore gives back the very rows backed up
        target = tmp_path / "final" / m.backup_id / "kotomi.db"
        target.parent.mkdir(parents=True)
        run = cli("restore", m.backup_id, "--db", str(target), "--from", str(store), env=env)
        assert run.returncode == 0, run.stderr
        assert file_sha256(target) == inv.db_sha[m.backup_id]
        if m.backup_id in rows:
            assert file_content_digest(target) == rows[m.backup_id]
    print("\n".join(log), dict(stats), f"in-process restores: {inv.restores}")
    assert stats["backup interrupted"] >= 2, f"the backup kills never landed mid-backup: {stats}"
    assert stats["drill"] >= 1 and stats["drill killed"] >= 1, stats
    assert stats["restore killed"] >= 1, stats
    assert stats["backup killed after writing to the store"] >= 1, stats
    assert stats["prune interrupted"] >= 2, f"the prune kills never landed mid-prune: {stats}"
    if backup_format == "full":
        # Every backup that was not killed copied the database (no read in place: full).
        assert stats["backup by copy"] == stats["backup completed"] >= 3, stats
        return
    # Both ways to take a backup ran: a copy (no cached base) and a read in place.
    assert stats["backup by copy"] >= 1 and stats["backup by live read"] >= 3, stats
    assert stats["packs written by a repack"] >= 1, stats
    assert stats["manifests switched by a repack"] >= 1, stats
    assert stats["packs removed"] >= 1, stats


# 2. A repack killed at each of its store changes ------------------------------------------------


def make_repack_case(db: Path, store: Path, env: dict[str, str]) -> list[str]:
    """Four backups: the first holds every page in one pack; a VACUUM before the third changes
    almost every page. Keeping the last two leaves the first pack mostly unused but needed."""
    conn = connect_like_kotomi(db)
    writer = KotomiWriter(conn, random.Random(5))
    made: list[str] = []
    try:
        for before in (None, "writes", "vacuum", "writes"):
            if before == "writes":
                kotomi_requests(writer, 60)
            elif before == "vacuum":
                conn.execute("VACUUM")
            run = backup_cli(db, store, env, None, random.Random())
            assert run.returncode == 0, run.stderr
            made.append(json.loads(run.stdout)["backup_id"])
    finally:
        conn.close()
    return made


def test_a_repack_killed_at_any_step_keeps_every_kept_backup_whole(
    kotomi_db: Path, tmp_path: Path, prune_child: Path
) -> None:
    env = child_env(tmp_path)
    pristine = tmp_path / "pristine"
    made = make_repack_case(kotomi_db, pristine, env)
    shas = {m.backup_id: m.db_sha256 for m in list_backups(LocalStore(pristine), NAME).backups}
    kept = set(made[2:])
    policy = {"keep_last": 2}
    now = datetime.now(UTC) + timedelta(days=2)
    backups = {m.backup_id: m for m in list_backups(LocalStore(pristine), NAME).backups}
    first_pack = set(backups[made[0]].pack_files())
    pristine_packs = pack_files_on(pristine)

    # A rehearsal on a copy: the changes a whole prune makes, in order.
    rehearsal = tmp_path / "rehearsal"
    shutil.copytree(pristine, rehearsal)
    whole = prune_in_child(prune_child, rehearsal, policy, now, env)
    assert whole.returncode == 0, whole.stderr
    result = json.loads(whole.stdout)
    changes = [line.split()[2:] for line in whole.stderr.splitlines() if line.startswith("change ")]
    assert len(changes) == result["changes"]
    assert first_pack <= set(result["packs"]["repacked"]), result
    assert result["packs"]["removed"] and result["packs"]["written"], result
    assert set(result["packs"]["rewritten_backups"]) == kept
    new_pack = [i for i, (what, key) in enumerate(changes) if what == "put" and "/packs/" in key]
    switches = [
        i
        for i, (what, key) in enumerate(changes)
        if what == "put" and key.startswith(f"{NAME}/revisions/")  # a new manifest revision
    ]
    assert len(new_pack) == 1 and len(switches) == 2, changes
    shutil.rmtree(rehearsal)

    # Killed with exactly k changes landed, for every k; then a prune that completes.
    for die_at in range(len(changes)):
        work = tmp_path / f"kill-{die_at}"
        shutil.copytree(pristine, work)
        where = f"killed after {die_at} changes (before {' '.join(changes[die_at])})"
        run = prune_in_child(prune_child, work, policy, now, env, die_at=die_at)
        assert run.killed, f"{where}: {run.returncode} {run.stderr}"
        inv = Invariants(work, tmp_path / "scratch", must_keep=set(kept), db_sha=dict(shas))
        manifests = inv.check(where)
        assert kept <= ids(manifests) <= set(made), where
        landed = pack_files_on(work) - pristine_packs
        switched = [m.backup_id for m in manifests if "repacked_at" in (m.paged or {})]
        if die_at == new_pack[0] + 1:  # the new pack is there, named by no manifest yet
            assert len(landed) == 1 and not landed & named_packs(manifests), where
            assert not switched, where
        if die_at == switches[0] + 1:  # one kept backup switched to it, the other not yet
            assert len(switched) == 1 and landed <= named_packs(manifests), where
        prune_store(LocalStore(work), NAME, retention(policy), now=now)
        assert_pruned_clean(inv, work, kept, now, f"{where}, then pruned")
        shutil.rmtree(work)

    # Killed by this test while a change is being made (at the new pack, at each switch),
    # one after another on the same store: each restart repacks again.
    work = tmp_path / "again"
    shutil.copytree(pristine, work)
    inv = Invariants(work, tmp_path / "scratch", must_keep=set(kept), db_sha=dict(shas))
    interrupted = 0
    for at, linger in [(new_pack[0], 0.0), (new_pack[0], 0.002), (switches[0], 0.0)]:
        before = store_state(work)
        run = prune_in_child(
            prune_child, work, policy, now, env, kill_at_change=at + 1, linger=linger
        )
        where = f"killed at change {at + 1} ({' '.join(changes[at])}) +{linger}s"
        manifests = inv.check(where)
        assert kept <= ids(manifests) <= set(made), where
        interrupted += run.killed and run.running_at_kill and store_state(work) != before
    assert interrupted >= 2, "the kills never landed mid-prune"
    done = prune_in_child(prune_child, work, policy, now, env)
    assert done.returncode == 0, done.stderr
    assert_pruned_clean(inv, work, kept, now, "after the killed repacks")
    assert cli_listing(work, env, "after the killed repacks") == kept


def assert_pruned_clean(
    inv: Invariants, store: Path, kept: set[str], now: datetime, where: str
) -> None:
    """After a prune that completed: the kept backups, whole, and exactly the packs they
    name; none mostly unused; the kept backups were switched to the new pack."""
    manifests = inv.check(where)
    assert ids(manifests) == kept, where
    assert pack_files_on(store) == named_packs(manifests), (
        f"{where}: packs on the store {sorted(pack_files_on(store))}, "
        f"named {sorted(named_packs(manifests))}"
    )
    assert not old_unnamed_packs(store, manifests, now)
    assert not mostly_dead(store, manifests, now), where
    assert all("repacked_at" in (m.paged or {}) for m in manifests), where


# 3. A flipped byte in a pack ---------------------------------------------------------------

B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def damage(data: bytes, offset: int) -> bytes:
    """One byte changed: in a base64 text (an age header) to another base64 character, so
    the header still parses and the damage reaches what it encodes; elsewhere one bit."""
    out = bytearray(data)
    out[offset] = (
        B64[(B64.index(data[offset]) + 1) % len(B64)] if data[offset] in B64 else data[offset] ^ 8
    )
    return bytes(out)


def damage_points(pack: bytes, encrypted: bool) -> dict[str, int]:
    """Where to flip: every part of the pack's format, and some payload."""
    rng = random.Random(11)
    payload = {
        "payload middle": len(pack) // 2,
        "payload, random": rng.randrange(len(pack) // 4, len(pack)),
        "last byte": len(pack) - 1,
    }
    if not encrypted:
        return {"zstd magic": 0, "zstd frame header": 4, **payload}
    stanza = pack.index(b"-> X25519 ")
    wrapped_key = pack.index(b"\n", stanza) + 10
    header_mac = pack.index(b"\n--- ") + 10
    return {
        "age version line": 3,
        "age stanza: ephemeral share": stanza + 20,
        "age stanza: wrapped file key": wrapped_key,
        "age header MAC": header_mac,
        "age payload nonce": header_mac + 50,  # after the MAC line
        **payload,
    }


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_a_flipped_byte_in_a_pack_fails_the_restore_in_one_line_and_changes_nothing(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey, encrypted: bool
) -> None:
    keys = {
        "KOTOMI_BACKUP_AGE_RECIPIENTS": age_key.recipient,
        "KOTOMI_BACKUP_AGE_IDENTITY": str(age_key.identity_file),
    }
    env = child_env(tmp_path, **(keys if encrypted else {}))
    store = tmp_path / "store"
    made = cli(
        "backup", "--db", str(kotomi_db), "--to", str(store), "--format", "paged", "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    manifest = json.loads(made.stdout)["manifest"]
    (pack,) = manifest["paged"]["packs"]
    assert pack.endswith(".pack.age" if encrypted else ".pack")
    path = store / NAME / "packs" / pack
    good = path.read_bytes()

    folder = tmp_path / "restore"
    folder.mkdir()
    target = folder / "kotomi.db"  # an existing database the failed restore must not touch
    shutil.copyfile(kotomi_db, target)
    original = target.read_bytes()
    problems = []
    for part, offset in damage_points(good, encrypted).items():
        path.write_bytes(damage(good, offset))
        for into in (target, folder / "new.db"):
            run = cli(
                "restore", "latest", "--db", str(into), "--from", str(store), "--json", env=env
            )
            where = f"{part} (byte {offset} of {len(good)}) damaged, restore into {into.name}"
            # Whatever the message, nothing may change beside the target.
            assert target.read_bytes() == original, f"{where}: the target changed"
            assert sorted(os.listdir(folder)) == ["kotomi.db"], f"{where}: files left behind"
            lines = run.stderr.strip().splitlines()
            if not (
                run.returncode == 1
                and run.stdout == ""
                and len(lines) == 1
                and lines[0].startswith("kotomi-backup: error:")
                and "unexpected" not in lines[0]
                and pack in lines[0]
            ):
                problems.append(f"{where}: exit {run.returncode}, {run.stderr.strip()!r}")
    assert not problems, (
        f"restoring from a damaged pack must fail with exit 1 and one line naming {pack}:\n"
        + "\n".join(problems)
    )

    path.write_bytes(good)  # the damage was the only problem
    run = cli("restore", "latest", "--db", str(target), "--from", str(store), "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert file_sha256(target) == manifest["db_sha256"]


# 4. What a killed pack upload leaves behind --------------------------------------------------


def test_a_pack_upload_killed_mid_copy_leaves_nothing_a_later_prune_keeps(
    kotomi_db: Path, tmp_path: Path, prune_child: Path
) -> None:
    """A full backup's interrupted upload is a folder without a manifest, removed by prune
    after a day with whatever is in it. A paged backup copies its packs into the shared
    packs/ folder: a copy killed half-way must not stay there for ever either."""
    env = child_env(tmp_path)
    store = tmp_path / "store"
    packs = store / NAME / "packs"
    first = backup_cli(kotomi_db, store, env, None, random.Random())
    assert first.returncode == 0, first.stderr
    conn = connect_like_kotomi(kotomi_db)
    writer = KotomiWriter(conn, random.Random(9))
    left: list[str] = []
    try:
        for _ in range(10):  # until a kill lands while a pack's temp file is there
            kotomi_requests(writer, 100)
            args = ["backup", "--db", str(kotomi_db), "--to", str(store), "--format", "paged"]
            proc = popen_cli(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wait_for(proc, lambda: any(n.startswith(".") for n in os.listdir(packs)))
            kill_now(proc)
            left = sorted(n for n in os.listdir(packs) if n.startswith("."))
            if left:
                break
    finally:
        conn.close()
    assert left, "no kill landed while a pack was being copied"

    # Two days later, as far as the prune can tell: the interrupted upload is long over.
    now = datetime.now(UTC) + timedelta(days=2)
    done = prune_in_child(prune_child, store, {"keep_last": 1}, now, env)
    assert done.returncode == 0, done.stderr
    manifests = Invariants(store, tmp_path / "scratch").check("after the prune")
    assert sorted(os.listdir(packs)) == sorted(named_packs(manifests)), (
        f"a prune two days after the killed upload left its temp file(s) {left} in {packs}"
    )
