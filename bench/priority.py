#!/usr/bin/env python3
"""A backup Kotomi does not feel: a Kotomi-shaped writer's latency while backups run beside a
steady competing load, with and without the priority change (issue 27), and the backups' time
on an otherwise idle machine.

    .venv/bin/python bench/priority.py           # 1 GB, 5 rounds; writes docs/ (~35 min)
    .venv/bin/python bench/priority.py --quick   # 20 MB, 1 round, to bench/.cache/quick/ (CI)

Every part runs in a process and a session of its own, as services do (the kernel shares the
CPU between sessions before it looks at nice values inside them):

- the writer: `KotomiWriter.request()` (a user upsert, then a comment or a reaction, in one
  transaction) on an open-loop schedule of `--rate` writes/s on a copy of the cached demo
  database (WAL, opened like Kotomi), for the whole run. A write's latency is from the moment it
  was due to its COMMIT, as a client waiting for it sees it (a stalled write delays the ones due
  behind it, and they count that wait);
- the competing load: one CPU-bound process per core, and a sequential reader of a file of the
  database's size that drops what it read from the page cache (so it keeps reading the disk);
- the backups: `kotomi-backup backup` (full) and `kotomi-backup backup --format paged` (read in
  place against the destination's previous backup, the frequent backup's case), one process each,
  started by `python -m kotomi_backup_dagster.cli` outside the repository.

Variants (`--variants`): `today`, the package before issue 27 (`--before`, by default the
parent of the commit that added engine/priority.py, extracted with `git archive`); `low`, this
package as it ships (KOTOMI_BACKUP_PRIORITY=low); and for the choice of mechanism, `normal` (this
package with KOTOMI_BACKUP_PRIORITY=normal: no priority) and `classic` (`normal` under
`nice -n 19 ionice -c 3`, the usual recipe), `nice` and `io` (each half of it alone).

A round runs, for each variant (the order reversed every other round): a window with no backup
(`--quiet-seconds`), a full backup, a paged backup, each preceded by dropping the live database
from the page cache (posix_fadvise: a small host does not hold a 1 GB database in memory) and a
settling pause. Each paged destination gets its base backup before the first round. Then, with
the writer and the load stopped, `--idle-reps` interleaved repetitions of each variant's full and
paged backup, the database in the page cache, measured by wait4 (wall, CPU).

The report goes into docs/benchmarks.md between `<!-- priority:start -->` and
`<!-- priority:end -->`, with docs/benchmarks-priority.png; `--quick` writes both to
bench/.cache/quick/. Raw samples: bench/.cache/priority-last-run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import CACHE, ROOT, engine_state, ensure_db, log, machine, markers, write_section

START, END = markers("priority")
HERE = Path(__file__).resolve()
PY = sys.executable
WINDOWS = ("none", "full", "paged")
VARIANT_LABELS = {
    "today": "before issue 27 (zstd 2 threads, normal priority)",
    "low": "this change as it ships: SCHED_IDLE and nice 19, the idle I/O class (best-effort 7 "
    "while reading the live database), zstd threads fitted, a checkpoint after the read",
    "normal": "this change with KOTOMI_BACKUP_PRIORITY=normal: threads fitted and the "
    "checkpoint after the read, no priority",
    "classic": "this change with KOTOMI_BACKUP_PRIORITY=normal under `nice -n 19 ionice -c 3`: "
    "the usual recipe, for everything (zstd leaves a core)",
    "nice": "KOTOMI_BACKUP_PRIORITY=normal under `nice -n 19` (the CPU half of the recipe)",
    "io": "KOTOMI_BACKUP_PRIORITY=normal under `ionice -c 3` (the disk half of the recipe)",
}
WRAPPERS = {
    "classic": ["nice", "-n", "19", "ionice", "-c", "3"],
    "nice": ["nice", "-n", "19"],
    "io": ["ionice", "-c", "3"],
}
GOAL_P99_MS = 10.0  # a backup may add this much to the writer's p99
GOAL_MAX_MS = 100.0
GOAL_IDLE_RATIO = 1.05


# -- the processes -----------------------------------------------------------------------------


def writer_main(db: Path, rate: float, out: Path, seed: int) -> None:
    """Writes at `rate` until SIGTERM; one line per write: due, start, end (monotonic), error."""
    from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi

    stop = False

    def stopping(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    conn = connect_like_kotomi(db)
    writer = KotomiWriter(conn, random.Random(seed))  # a seed per writer: new UUIDs
    for _ in range(20):  # warm up: the first requests create sites and pages
        writer.request()
    interval = 1.0 / rate
    with out.open("w") as fh:
        start = time.monotonic()
        i = 0
        while not stop:
            due = start + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            began = time.monotonic()
            error = ""
            try:
                writer.request()
            except Exception as exc:  # a failed write is counted, and the writer goes on
                error = type(exc).__name__
            ended = time.monotonic()
            fh.write(f"{due:.6f} {began:.6f} {ended:.6f} {error}\n")
            if i % 50 == 0:
                fh.flush()
            i += 1
    conn.close()


def burn_main() -> None:
    """One core's worth of CPU-bound work, until killed."""
    x = 0
    while True:
        for _ in range(100_000):
            x += 1


def reader_main(path: Path, out: Path) -> None:
    """Read `path` sequentially in 1 MiB blocks, again and again, dropping each 64 MiB from the
    page cache behind itself, so that every read goes to the disk; bytes/s every second."""
    stop = False

    def stopping(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    block = 1 << 20
    done = 0
    mark = time.monotonic()
    with out.open("w") as log_fh:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while not stop:
                offset = 0
                while not stop and (data := os.pread(fd, block, offset)):
                    offset += len(data)
                    done += len(data)
                    if offset % (64 << 20) == 0:
                        os.posix_fadvise(fd, offset - (64 << 20), 64 << 20, os.POSIX_FADV_DONTNEED)
                    now = time.monotonic()
                    if now - mark >= 1.0:
                        log_fh.write(f"{now:.3f} {done / (now - mark):.0f}\n")
                        log_fh.flush()
                        done, mark = 0, now
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def drop_from_cache(path: Path) -> None:
    for suffix in ("", "-wal"):
        try:
            fd = os.open(f"{path}{suffix}", os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 22):
            pass


# -- variants ----------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    root: Path  # where the backups of this variant keep their destination and staging
    env: dict[str, str]
    prefix: list[str] = field(default_factory=list)  # a wrapper: chrt, ionice

    def command(self, db: Path, dest: Path, paged: bool) -> list[str]:
        argv = [PY, "-m", "kotomi_backup_dagster.cli", "backup", "--db", str(db)]
        argv += ["--to", str(dest), "--json"]
        return self.prefix + argv + (["--format", "paged"] if paged else [])


def before_commit() -> str:
    added = subprocess.run(
        [
            "git",
            "log",
            "--diff-filter=A",
            "--format=%H",
            "--",
            "kotomi_backup_dagster/engine/priority.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("engine/priority.py is not in this branch's history: give --before")
    return f"{added[-1]}^"


def extract_package(commit: str) -> Path:
    """The package at `commit`, from `git archive`, cached under bench/.cache/."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into = CACHE / f"package-{sha}"
    if not (into / "kotomi_backup_dagster").exists():
        into.mkdir(parents=True, exist_ok=True)
        archive = into / "package.tar"
        subprocess.run(
            ["git", "archive", "-o", str(archive), sha, "kotomi_backup_dagster"],
            cwd=ROOT,
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
        archive.unlink()
    return into


def make_variants(names: list[str], work: Path, before: str) -> list[Variant]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    variants = []
    for name in names:
        env = dict(base)
        prefix: list[str] = []
        if name == "today":
            env["PYTHONPATH"] = str(extract_package(before))
        elif name == "low":
            env["KOTOMI_BACKUP_PRIORITY"] = "low"
        elif name == "normal":
            env["KOTOMI_BACKUP_PRIORITY"] = "normal"
        elif name in WRAPPERS:
            env["KOTOMI_BACKUP_PRIORITY"] = "normal"
            prefix = WRAPPERS[name]
        else:
            raise SystemExit(f"unknown variant {name!r}: use {', '.join(VARIANT_LABELS)}")
        root = work / name
        env["KOTOMI_BACKUP_STAGING_DIR"] = str(root / "staging")
        variants.append(Variant(name, root, env, prefix))
    return variants


@dataclass
class BackupRun:
    wall: float
    cpu: float
    started: float  # monotonic
    ended: float
    method: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # snapshot, verify, archive (s)


def run_backup(variant: Variant, db: Path, paged: bool) -> BackupRun:
    """One backup in a session of its own; wall and CPU time (its process tree) from wait4."""
    dest = variant.root / ("dest-paged" if paged else "dest-full")
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            variant.command(db, dest, paged),
            env=variant.env,
            cwd=variant.root,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{variant.name} backup failed: {err.read().decode()[-600:]}")
        report = json.loads(out.read())
        method = report.get("snapshot_method", "copy")
    if not paged:
        shutil.rmtree(dest, ignore_errors=True)
    return BackupRun(
        wall=ended - started,
        cpu=usage.ru_utime + usage.ru_stime,
        started=started,
        ended=ended,
        method=method,
        stages=report.get("seconds", {}),
    )


# -- a run -------------------------------------------------------------------------------------


@dataclass
class Window:
    round: int
    variant: str
    kind: str  # none, full, paged
    started: float
    ended: float
    backup_wall: float = 0.0
    backup_cpu: float = 0.0
    method: str = ""
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    windows: list[Window] = field(default_factory=list)
    writes: list[tuple[float, float, float, str]] = field(
        default_factory=list
    )  # due, began, ended, error
    reader_rates: list[float] = field(default_factory=list)
    idle: dict[str, list[BackupRun]] = field(default_factory=dict)  # "<variant> <full|paged>"
    cpu_windows: list[Window] = field(default_factory=list)  # the CPU mechanisms alone

    def latencies(self, window: Window) -> tuple[list[float], int]:
        """Due-to-commit latencies (ms) of the writes due within `window`, and failures."""
        got = [w for w in self.writes if window.started <= w[0] < window.ended]
        return [(end - due) * 1000 for due, _, end, _ in got], sum(1 for w in got if w[3])


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, start_new_session=True, **kwargs)


def start_writer(live: Path, rate: float, out: Path, seed: int) -> subprocess.Popen[bytes]:
    writer = spawn([PY, str(HERE), "writer", str(live), str(rate), str(out), str(seed)])
    time.sleep(2.0)
    if writer.poll() is not None:
        raise SystemExit(f"the writer failed (exit {writer.returncode}): see its traceback above")
    return writer


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """End the processes this run started (each by its own id), politely first."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_live(
    args: argparse.Namespace, variants: list[Variant], live: Path, reader_file: Path, work: Path
) -> Results:
    res = Results()
    writes_file, reader_log = work / "writes.txt", work / "reader.txt"
    writer = start_writer(live, args.rate, writes_file, seed=27)
    load: list[subprocess.Popen[bytes]] = []
    try:
        log("base paged backups (not measured)")
        for v in variants:
            run_backup(v, live, paged=True)
        cores = os.cpu_count() or 1
        load = [spawn([PY, str(HERE), "burn"]) for _ in range(cores)]
        load.append(spawn([PY, str(HERE), "reader", str(reader_file), str(reader_log)]))
        log(f"competing load: {cores} CPU-bound processes and a sequential reader")
        time.sleep(args.settle)
        for rnd in range(args.rounds):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for v in order:
                drop_from_cache(live)
                t0 = time.monotonic()
                time.sleep(args.quiet_seconds)
                res.windows.append(Window(rnd, v.name, "none", t0, time.monotonic()))
                for kind in ("full", "paged"):
                    time.sleep(args.settle)
                    drop_from_cache(live)
                    b = run_backup(v, live, paged=kind == "paged")
                    res.windows.append(
                        Window(
                            rnd, v.name, kind, b.started, b.ended, b.wall, b.cpu, b.method, b.stages
                        )
                    )
                    log(f"round {rnd + 1} {v.name:>6} {kind:>5}: {b.wall:6.2f} s ({b.method})")
                time.sleep(args.settle)
    finally:
        stop(load)
        stop([writer])
    for line in writes_file.read_text().splitlines():
        due, began, ended, *error = line.split(" ", 3)
        res.writes.append((float(due), float(began), float(ended), error[0] if error else ""))
    if reader_log.exists():
        res.reader_rates = [float(x.split()[1]) for x in reader_log.read_text().splitlines()]
    return res


MECHANISMS = {
    "none": None,
    "zstd -T2": [],
    "zstd -T1": [],
    "nice -n 19 zstd -T2": ["nice", "-n", "19"],
    "SCHED_IDLE zstd -T2": ["chrt", "--idle", "0"],
}


def measure_mechanisms(args: argparse.Namespace, live: Path, source: Path, work: Path) -> Results:
    """The CPU half alone: the writer, and `zstd` compressing the database (the archive
    stage's CPU, from the page cache) in a session of its own, plain, with one thread fewer,
    under nice 19 and under SCHED_IDLE; no other load of ours."""
    res = Results()
    writes_file = work / "mechanism-writes.txt"
    warm_cache(source)
    writer = start_writer(live, args.rate, writes_file, seed=28)
    try:
        names = list(MECHANISMS)
        for rep in range(args.mechanism_reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                time.sleep(1.0)
                started = time.monotonic()
                prefix = MECHANISMS[name]
                if prefix is None:
                    time.sleep(args.quiet_seconds / 3)
                else:
                    threads = "-T1" if "-T1" in name else "-T2"
                    argv = [*prefix, "zstd", "-q", "-2", threads, "-f", "-o", "/dev/null"]
                    subprocess.run([*argv, str(source)], check=True, start_new_session=True)
                res.cpu_windows.append(Window(rep, name, "cpu", started, time.monotonic()))
    finally:
        stop([writer])
    for line in writes_file.read_text().splitlines():
        due, began, ended, *error = line.split(" ", 3)
        res.writes.append((float(due), float(began), float(ended), error[0] if error else ""))
    return res


def render_mechanisms(res: Results) -> list[str]:
    lines = [
        "### The CPU half alone: what crosses a session",
        "",
        "The writer, and `zstd -2` compressing the database (the archive stage's CPU) in a "
        "session of its own, with no other load of ours; "
        f"{max(w.round for w in res.cpu_windows) + 1} interleaved repetitions. Median of the "
        "per-repetition figure (range), ms:",
        "",
        "| beside the writer | p50 | p99 | max | zstd (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in MECHANISMS:
        p50, p99, worst, wall = [], [], [], []
        for w in (w for w in res.cpu_windows if w.variant == name):
            lat, _ = res.latencies(w)
            if lat:
                p50.append(percentile(lat, 0.5))
                p99.append(percentile(lat, 0.99))
                worst.append(max(lat))
                wall.append(w.ended - w.started)
        shown = spread(wall, 2) if name != "none" else ""
        lines.append(f"| {name} | {spread(p50, 2)} | {spread(p99)} | {spread(worst)} | {shown} |")
    return lines


def measure_idle(
    args: argparse.Namespace, variants: list[Variant], live: Path, res: Results
) -> None:
    """Each variant's backups with nothing else of ours running, the database in the cache."""
    warm_cache(live)
    for rep in range(args.idle_reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for kind in ("full", "paged"):
            for v in order:
                b = run_backup(v, live, paged=kind == "paged")
                res.idle.setdefault(f"{v.name} {kind}", []).append(b)
                log(f"idle {rep + 1} {v.name:>6} {kind:>5}: {b.wall:6.2f} s, {b.cpu:6.2f} CPU-s")


# -- report ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Cell:
    """One variant's writes in one kind of window, over every round."""

    p50: list[float] = field(default_factory=list)  # per round
    p99: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    pooled: list[float] = field(default_factory=list)
    failed: int = 0
    backup_wall: list[float] = field(default_factory=list)


def cells(res: Results) -> dict[tuple[str, str], Cell]:
    found: dict[tuple[str, str], Cell] = {}
    for w in res.windows:
        lat, failed = res.latencies(w)
        if not lat:
            continue
        cell = found.setdefault((w.variant, w.kind), Cell())
        cell.p50.append(percentile(lat, 0.5))
        cell.p99.append(percentile(lat, 0.99))
        cell.max.append(max(lat))
        cell.pooled += lat
        cell.failed += failed
        if w.kind != "none":
            cell.backup_wall.append(w.backup_wall)
    return found


def spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def render(
    args: argparse.Namespace,
    res: Results,
    variants: list[str],
    before: str,
    command: str,
    png: Path | None,
) -> str:
    found = cells(res)
    info = machine()
    reader_mb_s = statistics.median(res.reader_rates) / 1e6 if res.reader_rates else 0.0
    db_mb = args.size
    lines = [
        START,
        "## A backup Kotomi does not feel: writer latency under a competing load "
        "(`bench/priority.py`)",
        "",
        f"`{command}`: package at {engine_state()} against {before} (`today`); {info['cpu']}, "
        f"{info['os']}, load average {info['load']} at the end (a machine shared with other "
        "people's test runs). A Kotomi-shaped writer at "
        f"{args.rate:g} writes/s on a {db_mb} MB database, beside one CPU-bound process per core "
        "and a sequential disk reader "
        f"({reader_mb_s:.0f} MB/s median), "
        "each in a session of its own; the live database dropped from the page cache before every "
        f"window; {args.rounds} rounds, variants interleaved. Latency: from when a write was due "
        "to its COMMIT, in ms. Each cell: the median of the per-round figure, with its range; "
        "*pooled* is the p99 of every write of all rounds together.",
        "",
        "| variant | window | writes | failed | p50 | p99 | p99 pooled | max | backup (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        for kind in WINDOWS:
            c = found.get((v, kind))
            if c is None:
                continue
            lines.append(
                f"| {v} | {kind} | {len(c.pooled)} | {c.failed} | {spread(c.p50, 2)} | "
                f"{spread(c.p99)} | {percentile(c.pooled, 0.99):.1f} | {spread(c.max)} | "
                f"{spread(c.backup_wall, 2) if kind != 'none' else ''} |"
            )
    lines += [
        "",
        "Variants: " + "; ".join(f"`{v}` {VARIANT_LABELS[v]}" for v in variants) + ".",
        "",
    ]
    lines += goals(found, res, variants)
    if res.idle:
        lines += [
            "",
            "### Backup time on an otherwise idle machine "
            f"({args.idle_reps} interleaved repetitions, database in the page cache)",
            "",
            "| variant | backup | wall (s) | CPU (s) | wall vs today |",
            "|---|---|---:|---:|---:|",
        ]
        for kind in ("full", "paged"):
            for v in variants:
                runs = res.idle.get(f"{v} {kind}", [])
                if not runs:
                    continue
                base = res.idle.get(f"today {kind}")
                ratio = ""
                if base and v != "today":
                    ratios = [r.wall / b.wall for r, b in zip(runs, base, strict=False)]
                    ratio = spread(ratios, 2) + "x"
                lines.append(
                    f"| {v} | {kind} | {spread([r.wall for r in runs], 2)} | "
                    f"{spread([r.cpu for r in runs], 2)} | {ratio} |"
                )
    if res.cpu_windows:
        lines += ["", *render_mechanisms(res)]
    if png is not None:
        lines += ["", f"![writer p99 and backup time, per variant]({png.name})"]
    lines.append(END)
    return "\n".join(lines)


def goals(found: dict[tuple[str, str], Cell], res: Results, variants: list[str]) -> list[str]:
    lines = ["Goals (pooled p99 of all rounds; the worst write of all rounds):", ""]
    for v in variants:
        none = found.get((v, "none"))
        if none is None:
            continue
        base = percentile(none.pooled, 0.99)
        parts = []
        for kind in ("full", "paged"):
            c = found.get((v, kind))
            if c is None:
                continue
            p99 = percentile(c.pooled, 0.99)
            worst = max(c.max)
            parts.append(
                f"{kind}: p99 {p99:.1f} ms against {base:.1f} ms with no backup "
                f"({'met' if p99 <= base + GOAL_P99_MS else 'NOT met'}: +{GOAL_P99_MS:g} ms), "
                f"worst {worst:.0f} ms ({'met' if worst <= GOAL_MAX_MS else 'NOT met'}: "
                f"{GOAL_MAX_MS:g} ms), {c.failed} failed"
            )
        lines.append(f"- `{v}`: " + "; ".join(parts))
    for kind in ("full", "paged"):
        base = res.idle.get(f"today {kind}")
        ours = res.idle.get(f"low {kind}")
        if base and ours:
            ratio = statistics.median(r.wall for r in ours) / statistics.median(
                b.wall for b in base
            )
            lines.append(
                f"- idle machine, {kind}: `low` takes {ratio:.2f}x `today`'s time "
                f"({'met' if ratio <= GOAL_IDLE_RATIO else 'NOT met'}: {GOAL_IDLE_RATIO}x)"
            )
    return lines


def chart(res: Results, variants: list[str], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed: no chart (pip install matplotlib)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = cells(res)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        for j, kind in enumerate(WINDOWS):
            c = found.get((v, kind))
            if c is None:
                continue
            x = j + (i - (len(variants) - 1) / 2) * width
            left.scatter([x] * len(c.p99), c.p99, s=14, color=f"C{i}", alpha=0.7)
            left.hlines(statistics.median(c.p99), x - width / 2, x + width / 2, color=f"C{i}")
            left.scatter([x], [max(c.max)], marker="x", color=f"C{i}")
        left.plot([], [], "o", color=f"C{i}", label=v)
    left.set_xticks(range(len(WINDOWS)), ["no backup", "full backup", "paged backup"])
    left.set_yscale("log")
    left.set_ylabel("writer latency (ms): p99 per round (dots, median bar), worst (x)")
    left.set_title("writer under a competing load")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    for i, v in enumerate(variants):
        for j, kind in enumerate(("full", "paged")):
            runs = res.idle.get(f"{v} {kind}", [])
            if not runs:
                continue
            x = j + (i - (len(variants) - 1) / 2) * width
            right.bar(x, statistics.median(r.wall for r in runs), width * 0.9, color=f"C{i}")
            right.scatter([x] * len(runs), [r.wall for r in runs], s=10, color="black")
    right.set_xticks([0, 1], ["full", "paged"])
    right.set_ylabel("wall time (s)")
    right.set_title("backup on an otherwise idle machine")
    right.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    parser.add_argument("--quiet-seconds", type=float, default=12.0, help="window with no backup")
    parser.add_argument("--settle", type=float, default=3.0, help="pause between windows (s)")
    parser.add_argument("--idle-reps", type=int, default=5)
    parser.add_argument("--mechanism-reps", type=int, default=6, help="0: leave that part out")
    parser.add_argument("--variants", default="today,classic,low", help=", ".join(VARIANT_LABELS))
    parser.add_argument(
        "--before", help="the commit of `today` (default: before engine/priority.py)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 MB, 1 round, short")
    parser.add_argument("--out", type=Path, help="markdown report (default docs/benchmarks.md)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.rounds, args.idle_reps, args.mechanism_reps = 20, 1, 1, 1
        args.quiet_seconds, args.settle = 3.0, 0.5
        args.out = args.out or CACHE / "quick" / "benchmarks.md"
    out: Path = args.out or ROOT / "docs" / "benchmarks.md"
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    before = args.before or before_commit()
    source = ensure_db(args.size)
    work = Path(tempfile.mkdtemp(prefix="kotomi-priority-", dir=CACHE))
    try:
        live = work / "kotomi.db"
        shutil.copyfile(source, live)
        variants = make_variants(names, work, before)
        for v in variants:
            v.root.mkdir(parents=True)
        mechanisms = measure_mechanisms(args, live, source, work) if args.mechanism_reps else None
        res = measure_live(args, variants, live, source, work)
        measure_idle(args, variants, live, res)
        if mechanisms is not None:
            res.cpu_windows = mechanisms.cpu_windows
            res.writes += mechanisms.writes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (CACHE / "priority-last-run.json").write_text(
        json.dumps(
            {
                "windows": [asdict(w) for w in res.windows],
                "writes": res.writes,
                "reader_rates": res.reader_rates,
                "idle": {k: [asdict(r) for r in v] for k, v in res.idle.items()},
                "cpu_windows": [asdict(w) for w in res.cpu_windows],
            }
        )
    )
    png = out.parent / "benchmarks-priority.png"
    drawn = chart(res, names, png)
    command = "python bench/priority.py" + (" --quick" if args.quick else "")
    if not args.quick:
        command += f" --rounds {args.rounds} --variants {args.variants}"
    shown = subprocess.run(
        ["git", "rev-parse", "--short", before], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = render(args, res, names, shown or before, command, png if drawn else None)
    write_section(out, "priority", report)
    log(f"wrote {out}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "writer":
        writer_main(Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    elif what == "burn":
        burn_main()
    elif what == "reader":
        reader_main(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
