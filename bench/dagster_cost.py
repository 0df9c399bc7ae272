#!/usr/bin/env python3
"""Dagster's cost per backup run, for the 15-minute (and a 5-minute) cadence.

    .venv/bin/python bench/dagster_cost.py           # 100 MB, 5 runs a case: docs/benchmarks.md
    .venv/bin/python bench/dagster_cost.py --quick   # 10 MB, 2 runs (CI): bench/.cache/quick/

For each case, interleaved, in one fresh Dagster instance (DAGSTER_HOME with the SQLite
storage of `make demo`): `dagster job execute -j kotomi_backup` with the frequent schedule's
tag (a paged backup) and without (the daily full one), against `kotomi-backup backup` of the
same database in the same format. The difference is Dagster's fixed cost per run (process
start, imports, run storage, events). Then, from the instance: the events each run wrote and
the bytes the instance grew by per run, and what a day of the default cadence adds (a paged
backup every 15 minutes, its prunes at most hourly, the daily full backup and prune).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import (  # bench/harness.py
    BIN,
    CACHE,
    ROOT,
    engine_state,
    ensure_db,
    log,
    machine,
    markers,
    measure,
    tree_size,
    write_section,
)

START, END = markers("dagster")
FORMAT_TAG = "kotomi_backup/format"
TARGET_CPU_SHARE = 0.03


def run_counts(home: Path) -> dict[str, int]:
    """Events per run id, from the instance's SQLite event log (one file per run)."""
    counts: dict[str, int] = {}
    for db in (home / "history" / "runs").glob("*.db"):
        if db.stem == "index":
            continue
        conn = sqlite3.connect(db)
        try:
            counts[db.stem] = int(conn.execute("SELECT count(*) FROM event_logs").fetchone()[0])
        finally:
            conn.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 MB, 2 runs (CI)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.reps = 10, 2
        args.out = args.out or CACHE / "quick" / "benchmarks.md"
    out: Path = args.out or ROOT / "docs" / "benchmarks.md"
    info = machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kotomi-dagster-", dir=CACHE) as tmp:
        work = Path(tmp)
        home = work / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        live = work / "kotomi.db"
        shutil.copyfile(ensure_db(args.size_mb), live)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
        env.update(
            PATH=f"{BIN}:{env.get('PATH', '')}",
            DAGSTER_HOME=str(home),
            KOTOMI_DB_PATH=str(live),
            KOTOMI_BACKUP_URL=str(work / "backups"),
            KOTOMI_BACKUP_STAGING_DIR=str(work / "staging"),
            XDG_CACHE_HOME=str(work / "cache"),
        )
        dagster = [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "kotomi_backup_dagster.definitions",
        ]
        cases = {
            "paged (the 15-minute run)": [
                *dagster,
                "-j",
                "kotomi_backup",
                "--tags",
                json.dumps({FORMAT_TAG: "paged"}),
            ],
            "full (the daily run)": [*dagster, "-j", "kotomi_backup"],
            "kotomi-backup backup --format paged": [
                str(BIN / "kotomi-backup"),
                "backup",
                "--format",
                "paged",
            ],
            "kotomi-backup backup (full)": [str(BIN / "kotomi-backup"), "backup"],
        }
        walls: dict[str, list[float]] = {k: [] for k in cases}
        cpus: dict[str, list[float]] = {k: [] for k in cases}
        grew: dict[str, list[int]] = {k: [] for k in cases if k.startswith(("paged", "full"))}
        events: dict[str, list[int]] = {k: [] for k in grew}
        for rep in range(args.reps):
            order = list(cases) if rep % 2 == 0 else list(reversed(cases))
            for key in order:
                before_bytes, before_runs = tree_size(home), set(run_counts(home))
                sample = measure(cases[key], env, cwd=ROOT)
                walls[key].append(sample.wall)
                cpus[key].append(sample.cpu)
                if key in grew:
                    grew[key].append(tree_size(home) - before_bytes)
                    new = {r: n for r, n in run_counts(home).items() if r not in before_runs}
                    events[key] += list(new.values())
                log(f"rep {rep + 1} {key}: {sample.wall:.2f} s")
    med = statistics.median
    fixed = {
        "paged": med(walls["paged (the 15-minute run)"])
        - med(walls["kotomi-backup backup --format paged"]),
        "full": med(walls["full (the daily run)"]) - med(walls["kotomi-backup backup (full)"]),
    }
    fixed_cpu = {
        "paged": med(cpus["paged (the 15-minute run)"])
        - med(cpus["kotomi-backup backup --format paged"]),
        "full": med(cpus["full (the daily run)"]) - med(cpus["kotomi-backup backup (full)"]),
    }
    per_run_events = {k: med(v) for k, v in events.items() if v}
    per_run_bytes = {k: med(v) for k, v in grew.items() if v}
    info["bench time"] = f"{time.monotonic() - started:.0f} s"
    lines = [
        START,
        "## Dagster's cost per run (`bench/dagster_cost.py`)",
        "",
        f"Written by `bench/dagster_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.size_mb} MB database, {args.reps} "
        f"interleaved runs per case, medians; a fresh instance with `make demo`'s SQLite storage. "
        f"Machine: {info['cpu']}; load {info['load']}; bench time {info['bench time']}. "
        f"Engine: {engine_state()}.",
        "",
        "| case | wall (s) | CPU (s) | events per run | instance growth per run |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in cases:
        ev = per_run_events.get(key)
        by = per_run_bytes.get(key)
        ev_text = "" if ev is None else f"{ev:.0f}"
        by_text = "" if by is None else f"{by / 1024:.0f} KiB"
        lines.append(
            f"| {key} | {med(walls[key]):.2f} | {med(cpus[key]):.2f} | {ev_text} | {by_text} |"
        )
    # A day of the default cadence: 96 paged runs, at most 24 prunes after them (counted at a
    # backup run's cost: an upper bound), the daily full backup and the daily prune.
    runs_per_day = {"15-minute": 96 + 24 + 2, "5-minute": 288 + 24 + 2}
    paged_key = "paged (the 15-minute run)"
    lines += [
        "",
        "What the cadence costs Dagster (its fixed cost, on top of the backups' own):",
        "",
    ]
    for cadence, runs in runs_per_day.items():
        cpu_share = runs * max(fixed_cpu["paged"], 0.0) / 86400
        day_events = runs * per_run_events.get(paged_key, 0)
        day_mib = runs * per_run_bytes.get(paged_key, 0) / 2**20
        lines.append(
            f"- {cadence} cadence: about {runs} runs a day; {day_events:.0f} events and "
            f"{day_mib:.0f} MiB of run storage a day (SQLite; bounded by "
            "`KOTOMI_BACKUP_RUN_HISTORY_DAYS`, 30 days by default); Dagster's CPU share of one "
            f"core {cpu_share:.2%} (limit {TARGET_CPU_SHARE:.0%} for everything)."
        )
    lines += [
        f"- Fixed cost of one run: {fixed['paged']:.2f} s wall, {fixed_cpu['paged']:.2f} CPU-s "
        f"(paged); {fixed['full']:.2f} s, {fixed_cpu['full']:.2f} CPU-s (full).",
        "",
        END,
    ]
    write_section(out, "dagster", "\n".join(lines))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
