#!/usr/bin/env python3
"""The proving soak of the default cadence: a simulated week of Kotomi traffic, a paged backup
every 15 minutes, a full one every day at 02:00, a prune after every backup (as the Dagster
prune sensor does), a drill every Sunday at 04:00, SIGKILLs at random; at the end every kept
backup must restore bit-exact, with the rows it had when it was taken.

    .venv/bin/python bench/soak.py              # 1 GB, 7 days (about 70 min): docs/benchmarks.md
    .venv/bin/python bench/soak.py --quick      # 20 MB, 1 day (a few minutes, CI)
    .venv/bin/python bench/soak.py --size-mb 100 --days 2 --out /tmp/soak.md

Time is moved forward, not waited for: every `kotomi-backup` command starts at its simulated
time with its wall clock moved forward (bench/fakeclock.c, preloaded: CLOCK_REALTIME only;
sleeps and timed waits keep the real clocks), so backup ids, pack names, retention buckets
and pack ages are those of the simulated week. The
retention policy is the default one (no KOTOMI_BACKUP_KEEP_* set).

What it writes (between `<!-- soak:start -->` and `<!-- soak:end -->` of docs/benchmarks.md):
store size per day against full daily backups (a second store, one full backup a day) and
against restic (hourly snapshots of a consistent copy, `forget` with the same policy and
`--prune` daily), pack count and prune/repack time over the week, CPU share of one core of
all the scheduled commands, what the kills hit, and, after the week, `restore latest` of a
drilled backup and of a never-fully-checked one against `restic restore` of the same state.
Exit 1 if any kept backup does not restore exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import (  # bench/harness.py
    BIN,
    CACHE,
    ROOT,
    engine_state,
    ensure_db,
    fakeclock,
    log,
    machine,
    markers,
    tree_size,
    write_section,
)

NAME = "kotomi"
SOAK_START, SOAK_END = markers("soak")
START = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday: the week's drill falls on its Sunday
RESTIC_PASSWORD = "soak"
TARGET_CPU_SHARE = 0.03
TARGET_RPO_MINUTES = 15
DRILLED = "restore latest (drilled: quick_check)"
UNCHECKED = "restore of a never-fully-checked backup (integrity_check)"


# -- running commands at a simulated time ----------------------------------------------------


@dataclass
class Ran:
    argv: list[str]
    wall: float
    cpu: float
    rss_mb: float
    returncode: int
    killed: bool
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def at(moment: datetime) -> list[str]:
    """The prefix that starts a command's wall clock at `moment` and lets it run from there
    (`env` execs it: the pid is the command's, so a SIGKILL kills the command itself)."""
    offset = int((moment - datetime.now(UTC)).total_seconds() * 1e9)
    return ["env", f"LD_PRELOAD={fakeclock()}", f"FAKECLOCK_OFFSET_NS={max(offset, 0)}"]


def run(argv: list[str], env: dict[str, str], kill_after: float | None = None) -> Ran:
    """One command, measured with wait4; with `kill_after`, SIGKILLed after that many seconds
    if it is still running."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        killed = False
        while True:  # wait4 keeps the child's rusage; Popen.wait would reap it first
            pid, status, usage = os.wait4(proc.pid, 0 if kill_after is None else os.WNOHANG)
            if pid:
                break
            if not killed and time.perf_counter() - started > (kill_after or 0):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.002)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Ran(
        argv=argv,
        wall=time.perf_counter() - started,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
        killed=killed and proc.returncode == -signal.SIGKILL,
        stdout=stdout,
        stderr=stderr,
    )


def must(ran: Ran) -> Ran:
    if ran.returncode != 0:
        raise RuntimeError(f"{' '.join(ran.argv)} exited {ran.returncode}: {ran.stderr[-800:]}")
    return ran


# -- the live database and its traffic ----------------------------------------------------


class Traffic:
    """Kotomi's writes, from a process of its own (bench/paged.py's writer), following a day:
    quiet at night, busiest in the evening (UTC)."""

    def __init__(self, db: Path, seed: int, per_day: int) -> None:
        self.per_day = per_day
        script = [str(BIN / "python"), str(ROOT / "bench" / "paged.py"), "writer"]
        self.proc = subprocess.Popen(
            [*script, str(db), str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._answer()

    def _answer(self) -> None:
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith("ok"):
            raise RuntimeError(f"the writer process failed (exit {self.proc.wait()})")

    def requests_for(self, start: datetime, minutes: int) -> int:
        """Requests in the `minutes` from `start`: a day's total spread over a daily curve
        (about 5x more at 20:00 than at 04:00)."""
        hour = start.hour + start.minute / 60
        weight = 1.0 + 0.67 * math.sin((hour - 14) / 24 * 2 * math.pi)
        return max(0, round(self.per_day * minutes / 1440 * weight))

    def write(self, requests: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{requests}\n")
        self.proc.stdin.flush()
        self._answer()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def fingerprint(db: Path) -> dict[str, list[int]]:
    """Every table's row count and sum of rowids: what a restore of this state must give."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            t: [
                int(v or 0)
                for v in conn.execute(f'SELECT count(*), total(rowid) FROM "{t}"').fetchone()
            ]
            for t in sorted(tables)
        }
    finally:
        conn.close()


def consistent_copy(live: Path, copy: Path) -> None:
    """What restic backs up: a consistent copy (the live WAL file is not one)."""
    copy.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


# -- the week ----------------------------------------------------------------------------------


@dataclass
class Day:
    day: int
    store_bytes: int
    full_daily_bytes: int
    restic_bytes: int
    packs: int
    backups_listed: int
    requests: int


@dataclass
class Soak:
    size_mb: int
    days: int
    every_minutes: int
    kill_rate: float
    per_day: int
    db_bytes: int = 0
    days_done: list[Day] = field(default_factory=list)
    backups: list[dict[str, Any]] = field(default_factory=list)  # per scheduled backup
    prunes: list[dict[str, Any]] = field(default_factory=list)
    drills: list[dict[str, Any]] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    restored: dict[str, str] = field(default_factory=dict)  # backup id -> "ok" or the problem
    restores: dict[str, list[float]] = field(default_factory=dict)
    restic_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def simulated_seconds(self) -> float:
        return self.days * 86400.0


class Week:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.live = work / "data" / "kotomi.db"
        self.store = work / "store"
        self.full_store = work / "full-daily"
        self.restic = work / "restic"
        self.copy = work / "restic-copy" / "kotomi.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
        self.env.update(
            {
                "XDG_CACHE_HOME": str(work / "cache"),
                "RESTIC_PASSWORD": RESTIC_PASSWORD,
            }
        )
        self.states: dict[datetime, dict[str, list[int]]] = {}  # slot -> fingerprint
        self.shas: dict[str, str] = {}  # backup id -> db_sha256 reported when it was made
        self.durations: dict[str, float] = {}
        self.soak = Soak(
            size_mb=args.size_mb,
            days=args.days,
            every_minutes=args.every,
            kill_rate=args.kill_rate,
            per_day=args.requests_per_day,
        )

    def kotomi(self, moment: datetime, *args: str) -> list[str]:
        return [*at(moment), str(BIN / "kotomi-backup"), *args]

    def scheduled(self, kind: str, argv: list[str]) -> Ran:
        """A scheduled command, SIGKILLed now and then after a random share of its usual time."""
        kill_after = None
        if kind in ("backup", "prune") and self.rng.random() < self.args.kill_rate:
            kill_after = self.rng.uniform(0.05, 1.0) * self.durations.get(kind, 1.0)
        ran = run(argv, self.env, kill_after)
        self.soak.cpu_seconds += ran.cpu
        if ran.killed:
            self.soak.kills[kind] = self.soak.kills.get(kind, 0) + 1
        elif ran.returncode == 0:
            last = self.durations.get(kind, ran.wall)
            self.durations[kind] = 0.8 * last + 0.2 * ran.wall
        elif kind != "drill":
            raise RuntimeError(f"{kind} failed: {ran.stderr[-800:]}")
        return ran

    def setup(self) -> None:
        self.live.parent.mkdir(parents=True)
        shutil.copyfile(ensure_db(self.args.size_mb), self.live)
        self.soak.db_bytes = self.live.stat().st_size
        self.copy.parent.mkdir(parents=True)
        must(run(["restic", "init", "--repo", str(self.restic), "-q"], self.env))

    def backup(self, moment: datetime, fmt: str, store: Path) -> None:
        self.states[moment] = fingerprint(self.live)
        before = tree_size(store) if store.exists() else 0
        argv = self.kotomi(moment, "backup", "--db", str(self.live), "--to", str(store))
        ran = self.scheduled("backup", [*argv, "--format", fmt, "--json"])
        entry: dict[str, Any] = {
            "at": moment.isoformat(),
            "format": fmt,
            "store": store.name,
            "wall": round(ran.wall, 3),
            "cpu": round(ran.cpu, 3),
            "rss_mb": round(ran.rss_mb, 1),
            "killed": ran.killed,
            "added": tree_size(store) - before if store.exists() else 0,
        }
        if ran.returncode == 0:
            made = ran.json()
            self.shas[made["backup_id"]] = made["manifest"]["db_sha256"]
            entry["backup_id"] = made["backup_id"]
            entry["method"] = made.get("snapshot_method")
            paged = made["manifest"].get("paged") or {}
            entry["new_pages"] = paged.get("new_pages")
        self.soak.backups.append(entry)

    def prune(self, moment: datetime, store: Path) -> None:
        started = time.perf_counter()
        ran = self.scheduled("prune", self.kotomi(moment, "prune", "--to", str(store), "--json"))
        entry: dict[str, Any] = {
            "at": moment.isoformat(),
            "store": store.name,
            "wall": round(time.perf_counter() - started, 3),
            "cpu": round(ran.cpu, 3),
            "killed": ran.killed,
        }
        if ran.returncode == 0:
            result = ran.json()["destinations"][0]
            packs = result.get("packs", {})
            entry.update(
                removed=len(result["removed"]),
                packs_removed=len(packs.get("removed", [])),
                packs_repacked=len(packs.get("repacked", [])),
                packs_written=len(packs.get("written", [])),
            )
        self.soak.prunes.append(entry)

    def drill(self, moment: datetime) -> None:
        ran = self.scheduled(
            "drill", self.kotomi(moment, "drill", "--from", str(self.store), "--json")
        )
        records = ran.json()["drills"] if ran.stdout.strip() else []
        self.soak.drills.append(
            {
                "at": moment.isoformat(),
                "ok": ran.returncode == 0,
                "wall": round(ran.wall, 3),
                "backups": [r["backup_id"] for r in records],
            }
        )

    def restic_backup(self, moment: datetime) -> None:
        consistent_copy(self.live, self.copy)
        stamp = moment.strftime("%Y-%m-%d %H:%M:%S")
        argv = [
            "restic",
            "--repo",
            str(self.restic),
            "backup",
            "-q",
            "--time",
            stamp,
            str(self.copy),
        ]
        self.soak.restic_seconds += must(run(argv, self.env)).wall

    def restic_cmd(self, command: str) -> list[str]:
        return ["restic", "--repo", str(self.restic), command, "-q"]

    def listed(self) -> list[dict[str, Any]]:
        argv = [str(BIN / "kotomi-backup"), "list", "--to", str(self.store), "--json"]
        backups: list[dict[str, Any]] = must(run(argv, self.env)).json()["destinations"][0][
            "backups"
        ]
        return backups

    def restic_forget(self) -> None:
        policy = ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12"]
        argv = [*self.restic_cmd("forget"), *policy, "--keep-yearly", "3"]
        self.soak.restic_seconds += must(run([*argv, "--prune"], self.env)).wall

    def end_of_day(self, day: int, requests: int) -> None:
        packs = self.store / NAME / "packs"
        listed = self.listed()
        self.soak.days_done.append(
            Day(
                day=day,
                store_bytes=tree_size(self.store),
                full_daily_bytes=tree_size(self.full_store),
                restic_bytes=tree_size(self.restic),
                packs=sum(1 for p in packs.iterdir() if p.name.endswith((".pack", ".pack.age")))
                if packs.is_dir()
                else 0,
                backups_listed=len(listed),
                requests=requests,
            )
        )
        last = self.soak.days_done[-1]
        log(
            f"day {day}: store {last.store_bytes / 1e6:.0f} MB ({last.backups_listed} backups, "
            f"{last.packs} packs), full daily {last.full_daily_bytes / 1e6:.0f} MB, "
            f"restic {last.restic_bytes / 1e6:.0f} MB, kills {self.soak.kills}"
        )

    def week(self) -> None:
        step = timedelta(minutes=self.args.every)
        slots = int(self.soak.days * 1440 / self.args.every)
        traffic = Traffic(self.live, self.args.seed, self.args.requests_per_day)
        day_requests = 0
        try:
            for n in range(1, slots + 1):
                moment = START + n * step
                requests = traffic.requests_for(moment - step, self.args.every)
                traffic.write(requests)
                day_requests += requests
                self.backup(moment, "paged", self.store)
                if moment.hour == 2 and moment.minute == 0:  # the daily full backup, 02:00
                    self.backup(moment + timedelta(seconds=30), "full", self.store)
                    self.backup(moment + timedelta(seconds=30), "full", self.full_store)
                    self.prune(moment + timedelta(seconds=50), self.full_store)
                self.prune(moment + timedelta(minutes=1), self.store)
                if moment.minute == 0:
                    self.restic_backup(moment)
                if moment.hour == 3 and moment.minute == 0:
                    self.restic_forget()
                if moment.weekday() == 6 and moment.hour == 4 and moment.minute == 0:
                    self.drill(moment + timedelta(minutes=2))
                if moment.hour == 0 and moment.minute == 0:
                    self.end_of_day(len(self.soak.days_done) + 1, day_requests)
                    day_requests = 0
        finally:
            traffic.close()
        self.end_state = START + slots * step

    # -- after the week ----------------------------------------------------------------------

    def verify_every_kept_backup(self) -> None:
        """Restore each listed backup: its sha256 (checked by the restore against its manifest,
        and against the one reported when it was made) and the rows of its slot."""
        end = self.end_state + timedelta(minutes=5)
        must(run(self.kotomi(end, "prune", "--to", str(self.store)), self.env))
        scratch = self.work / "verify"
        slots = sorted(self.states)
        for backup in self.listed():
            backup_id = backup["backup_id"]
            target = scratch / backup_id / "kotomi.db"
            target.parent.mkdir(parents=True)
            done = run(
                [
                    str(BIN / "kotomi-backup"),
                    "restore",
                    backup_id,
                    "--db",
                    str(target),
                    "--from",
                    str(self.store),
                    "--json",
                ],
                self.env,
            )
            made = datetime.strptime(backup["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            slot = max((s for s in slots if s <= made), default=None)
            problem = ""
            if done.returncode != 0:
                problem = f"restore failed: {done.stderr.strip()[-300:]}"
            elif backup_id in self.shas and self.shas[backup_id] != backup["db_sha256"]:
                problem = "its db_sha256 changed since it was made"
            elif slot is None or fingerprint(target) != self.states[slot]:
                problem = f"rows differ from the state at {slot}"
            self.soak.restored[backup_id] = problem or "ok"
            shutil.rmtree(target.parent)

    def restore_ratios(self, reps: int) -> None:
        """`restore latest` of a drilled backup, of a never-fully-checked one, and `restic
        restore` of the same state, interleaved."""
        end = self.end_state + timedelta(minutes=10)
        self.restic_backup(self.end_state)  # restic gets the very state of the last backup
        must(run(self.kotomi(end, "drill", "latest", "--from", str(self.store)), self.env))
        backups = self.listed()
        drilled_store = self.store
        unchecked = next(
            (b["backup_id"] for b in backups[1:] if b["backup_id"] not in self.drilled()), None
        )
        cases: dict[str, list[str]] = {
            DRILLED: ["restore", "latest"],
            "restic restore": [],
        }
        if unchecked:
            cases["restore of a never-fully-checked backup (integrity_check)"] = [
                "restore",
                unchecked,
            ]
        out = self.work / "restored"
        for rep in range(reps):
            order = list(cases) if rep % 2 == 0 else list(reversed(cases))
            for label in order:
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if label == "restic restore":
                    argv = [
                        "restic",
                        "--repo",
                        str(self.restic),
                        "restore",
                        "latest",
                        "-q",
                        "--target",
                        str(out),
                    ]
                else:
                    argv = [
                        str(BIN / "kotomi-backup"),
                        *cases[label],
                        "--db",
                        str(out / "kotomi.db"),
                        "--from",
                        str(drilled_store),
                        "--no-keep",
                    ]
                self.soak.restores.setdefault(label, []).append(
                    round(must(run(argv, self.env)).wall, 3)
                )
        shutil.rmtree(out, ignore_errors=True)

    def drilled(self) -> set[str]:
        folder = self.store / NAME
        return (
            {p.name for p in folder.iterdir() if (p / "drills").is_dir()}
            if folder.is_dir()
            else set()
        )


# -- report ------------------------------------------------------------------------------------


def yes(met: bool) -> str:
    return "yes" if met else "**no**"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(soak: Soak, command: str, info: dict[str, str]) -> str:
    mb = 1e6
    days = soak.days_done
    backups = [b for b in soak.backups if b["store"] == "store"]
    paged = [b for b in backups if b["format"] == "paged" and not b["killed"]]
    prunes = [p for p in soak.prunes if p["store"] == "store" and not p["killed"]]
    restored_ok = sum(1 for v in soak.restored.values() if v == "ok")
    cpu_share = soak.cpu_seconds / soak.simulated_seconds
    lines = [
        SOAK_START,
        "## The default cadence, soaked: a simulated week (`bench/soak.py`)",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {soak.days} simulated "
        f"day(s) of Kotomi-like traffic ({soak.per_day} requests a day, busiest in the evening) on "
        f"a {soak.db_bytes / mb:.0f} MB database; a paged backup every {soak.every_minutes} "
        "minutes, a full one daily at 02:00, a prune after every backup, a drill on Sunday at "
        f"04:00, {soak.kill_rate:.0%} of backups and prunes SIGKILLed at random; the default "
        "retention policy (daily 7, weekly 4, monthly 12, yearly 3). Time moved forward "
        "(bench/fakeclock.c), "
        f"not waited for. Machine: {info.get('cpu')}; load {info.get('load')}; bench time "
        f"{info.get('bench time')}. Engine: {info.get('engine')}.",
        "",
        f"**Every kept backup restored bit-exact: {restored_ok} of {len(soak.restored)}** (sha256 "
        "against its manifest and the one reported when it was made; each table's row count and "
        "rowid sum against the live database at its time).",
        "",
        "| target | measured | limit | met |",
        "|---|---:|---:|:-:|",
        f"| RPO (newest backup's age at worst) | {soak.every_minutes} min | "
        f"{TARGET_RPO_MINUTES} min | {yes(soak.every_minutes <= TARGET_RPO_MINUTES)} |",
        f"| CPU share of one core, every scheduled command | {cpu_share:.2%} | "
        f"{TARGET_CPU_SHARE:.0%} | {yes(cpu_share <= TARGET_CPU_SHARE)} |",
    ]
    ratios = soak.restores
    peer = med(ratios.get("restic restore", []))
    for label, limit in (
        (DRILLED, 1.0),
        (UNCHECKED, 3.0),
    ):
        if label in ratios and peer == peer:
            ratio = med(ratios[label]) / peer
            lines.append(
                f"| {label} vs restic restore | {med(ratios[label]):.2f} s vs {peer:.2f} s = "
                f"{ratio:.2f}x | {limit:.1f}x | {yes(ratio <= limit)} |"
            )
    if DRILLED in ratios:
        rto = med(ratios[DRILLED])
        lines.append(
            f"| RTO, `restore latest` from local disk | {rto:.2f} s | 5 s | {yes(rto <= 5)} |"
        )
    lines += [
        "",
        "Store size at the end of each day (every file of the store: archives, packs, page maps, "
        "manifests, drill records):",
        "",
        "| day | paged every 15 min + full daily | full daily only | restic (hourly, same policy) "
        "| packs | backups listed | requests |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in days:
        lines.append(
            f"| {d.day} | {d.store_bytes / mb:.0f} MB | {d.full_daily_bytes / mb:.0f} MB | "
            f"{d.restic_bytes / mb:.0f} MB | {d.packs} | {d.backups_listed} | {d.requests} |"
        )
    walls = [b["wall"] for b in paged]
    lines += [
        "",
        "| per command | count | median wall (s) | max wall (s) | median CPU (s) | max RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| paged backup | {len(paged)} | {med(walls):.2f} | {max(walls, default=0):.2f} | "
        f"{med([b['cpu'] for b in paged]):.2f} | "
        f"{max((b['rss_mb'] for b in paged), default=0):.0f} |",
    ]
    full = [b for b in backups if b["format"] == "full" and not b["killed"]]
    if full:
        lines.append(
            f"| full backup (02:00) | {len(full)} | {med([b['wall'] for b in full]):.2f} | "
            f"{max(b['wall'] for b in full):.2f} | {med([b['cpu'] for b in full]):.2f} | "
            f"{max(b['rss_mb'] for b in full):.0f} |"
        )
    if prunes:
        lines.append(
            f"| prune | {len(prunes)} | {med([p['wall'] for p in prunes]):.2f} | "
            f"{max(p['wall'] for p in prunes):.2f} | {med([p['cpu'] for p in prunes]):.2f} | |"
        )
    repacking = [p for p in prunes if p.get("packs_repacked")]
    drills = ", ".join(f"{d['at'][:16]} {'ok' if d['ok'] else 'FAILED'}" for d in soak.drills)
    lines += [
        "",
        f"Prunes: {sum(p.get('removed', 0) for p in prunes)} backups removed, "
        f"{sum(p.get('packs_removed', 0) for p in prunes)} packs removed, "
        f"{sum(p.get('packs_repacked', 0) for p in prunes)} repacked into "
        f"{sum(p.get('packs_written', 0) for p in prunes)} in {len(repacking)} prunes "
        f"(median {med([p['wall'] for p in repacking]):.2f} s when repacking). "
        f"Paged backups read in place: {sum(b.get('method') == 'live read' for b in paged)} of "
        f"{len(paged)}; median new pages {med([b['new_pages'] or 0 for b in paged]):.0f}. "
        f"Kills that landed: {soak.kills or 'none'}. Drills: {drills or 'none'}.",
        "",
        "Restores after the week (interleaved, wall seconds per repetition):",
        "",
    ]
    for label, walls_ in soak.restores.items():
        lines.append(f"- {label}: {', '.join(f'{w:.2f}' for w in walls_)}")
    bad = {k: v for k, v in soak.restored.items() if v != "ok"}
    if bad:
        lines += ["", "**Backups that did not restore exactly:**", ""]
        lines += [f"- {k}: {v}" for k, v in bad.items()]
    lines += ["", SOAK_END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--every", type=int, default=15, help="minutes between paged backups")
    parser.add_argument("--requests-per-day", type=int, default=20000)
    parser.add_argument("--kill-rate", type=float, default=0.05)
    parser.add_argument("--reps", type=int, default=3, help="restore repetitions at the end")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="20 MB, 1 day, 1 rep (CI)")
    parser.add_argument("--out", type=Path, help="markdown report (default docs/benchmarks.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.days, args.reps = 20, 1, 1
        args.requests_per_day = min(args.requests_per_day, 2000)
        args.kill_rate = max(args.kill_rate, 0.1)  # a short run still meets kills
        args.out = args.out or CACHE / "quick" / "benchmarks.md"
    if shutil.which("restic") is None or shutil.which("gcc") is None:
        raise SystemExit("bench: needs restic and gcc (scripts/install-system-deps.sh)")
    out: Path = args.out or ROOT / "docs" / "benchmarks.md"
    command = "bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kotomi-soak-"))
    week = Week(args, work)
    try:
        week.setup()
        week.week()
        week.verify_every_kept_backup()
        week.restore_ratios(args.reps)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    week.soak.wall_seconds = time.monotonic() - started
    info["load"] += " at start; {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg())
    info["bench time"] = f"{week.soak.wall_seconds:.0f} s"
    info["engine"] = engine_state()
    write_section(out, "soak", render(week.soak, command.strip(), info))
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "soak-last-run.json").write_text(json.dumps(asdict(week.soak), indent=1, default=str))
    log(f"wrote {out}")
    failed = [k for k, v in week.soak.restored.items() if v != "ok"]
    if failed or not week.soak.restored:
        log(f"soak FAILED: {len(failed)} kept backups did not restore exactly: {failed[:5]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
