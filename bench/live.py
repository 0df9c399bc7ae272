"""Live-load benchmark: a Kotomi-like writer at a fixed rate while backups run back to back.

Two processes, as in production (Kotomi and the backup job never share one):

    python bench/live.py writer  DB RATE SECONDS OUT.json
        KotomiWriter.request() on an open-loop schedule (request i is due at t0 + i/RATE);
        records each request's latency (start to COMMIT) and samples the -wal size.
    python bench/live.py backups DB DEST STAGING SECONDS OUT.json [NICE]
        the stages of `kotomi-backup backup` (run_backup) in a loop until SECONDS have passed,
        recording per snapshot: steps (1 = no restart), busy retries, seconds, and the -wal
        size just before and just after the snapshot.

`bench/run.py` drives both (see `run_live`) and writes the results into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _wal_size(db: Path) -> int:
    try:
        return os.stat(f"{db}-wal").st_size
    except FileNotFoundError:
        return 0


def writer_main(db: Path, rate: float, seconds: float, out: Path) -> None:
    from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi

    conn = connect_like_kotomi(db)
    writer = KotomiWriter(conn, random.Random(7))
    for _ in range(20):  # warm up: first requests create sites and pages
        writer.request()
    interval = 1.0 / rate
    total = int(rate * seconds)
    latencies: list[float] = []
    late = 0
    wal_max = _wal_size(db)
    next_sample = 0.0
    start = time.perf_counter()
    for i in range(total):
        due = start + i * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.010:
            late += 1
        began = time.perf_counter()
        writer.request()
        ended = time.perf_counter()
        latencies.append(ended - began)
        if ended >= next_sample:
            wal_max = max(wal_max, _wal_size(db))
            next_sample = ended + 0.05
    elapsed = time.perf_counter() - start
    conn.close()
    out.write_text(
        json.dumps(
            {
                "rate": rate,
                "requests": total,
                "achieved_rate": total / elapsed,
                "late_over_10ms": late,
                "latencies_ms": [round(x * 1000, 4) for x in latencies],
                "wal_max": wal_max,
            }
        )
    )


def backups_main(db: Path, dest: Path, staging: Path, seconds: float, out: Path, nice: int) -> None:
    if nice:
        os.nice(nice)
    from kotomi_backup_dagster.engine.backup import (
        preflight,
        stage_snapshot,
        stage_upload,
        verify_and_archive,
    )
    from kotomi_backup_dagster.engine.errors import BackupError
    from kotomi_backup_dagster.engine.settings import BackupSettings

    settings = BackupSettings(db_path=db, urls=(str(dest),), staging_dir=staging)
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.monotonic()
        stores = preflight(settings)
        wal_before = _wal_size(db)
        staged, snap = stage_snapshot(settings, durable=False)  # as run_backup does
        wal_after = _wal_size(db)
        report, manifest, _ = verify_and_archive(staged, settings, durable=False)
        if manifest is None:
            raise BackupError(report.summary())
        outcomes = stage_upload(staged, stores)
        if not all(o.ok for o in outcomes):
            raise BackupError("upload failed")
        shutil.rmtree(dest / settings.name / manifest.backup_id, ignore_errors=True)
        runs.append(
            {
                "seconds": time.monotonic() - began,
                "snapshot_seconds": snap.seconds,
                "steps": snap.steps,
                "busy_retries": snap.busy_retries,
                "wal_before": wal_before,
                "wal_after": wal_after,
            }
        )
    out.write_text(json.dumps({"runs": runs}))


@dataclass
class LivePhase:
    rate: float
    backups: str  # "none", "back to back", "back to back, nice 10"
    p50_ms: float
    p99_ms: float
    max_ms: float
    achieved_rate: float
    wal_max: int
    runs: int = 0
    snapshot_steps_max: int = 0
    restarts: int = 0
    busy_retries: int = 0
    wal_growth_max: int = 0
    snapshot_seconds: float = 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run_live(
    source_db: Path,
    rates: list[float],
    seconds: float,
    *,
    nice_variant: bool,
    python: str = sys.executable,
    log: Any = print,
) -> list[LivePhase]:
    """For each rate: the writer alone, then the writer with backups back to back."""
    here = Path(__file__).resolve()
    phases: list[LivePhase] = []
    with tempfile.TemporaryDirectory(prefix="kotomi-live-", dir=source_db.parent) as tmp_name:
        tmp = Path(tmp_name)
        variants = [("none", 0), ("back to back", 0)]
        if nice_variant:
            variants.append(("back to back, nice 10", 10))
        for rate in rates:
            for label, nice in variants:
                db = tmp / "kotomi.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(source_db, db)
                wout, bout = tmp / "writer.json", tmp / "backups.json"
                bout.unlink(missing_ok=True)
                writer = subprocess.Popen(
                    [python, str(here), "writer", str(db), str(rate), str(seconds), str(wout)]
                )
                backups = None
                if label != "none":
                    time.sleep(0.5)  # the writer is warm before the first snapshot
                    backups = subprocess.Popen(
                        [
                            python,
                            str(here),
                            "backups",
                            str(db),
                            str(tmp / "dest"),
                            str(tmp / "staging"),
                            str(seconds - 1.0),
                            str(bout),
                            str(nice),
                        ]
                    )
                if writer.wait() != 0:
                    raise RuntimeError("live writer failed")
                if backups is not None and backups.wait() != 0:
                    raise RuntimeError("live backups failed")
                w = json.loads(wout.read_text())
                lat = [float(x) for x in w["latencies_ms"]]
                phase = LivePhase(
                    rate=rate,
                    backups=label,
                    p50_ms=statistics.median(lat),
                    p99_ms=_percentile(lat, 0.99),
                    max_ms=max(lat),
                    achieved_rate=float(w["achieved_rate"]),
                    wal_max=int(w["wal_max"]),
                )
                if backups is not None:
                    runs = json.loads(bout.read_text())["runs"]
                    phase.runs = len(runs)
                    phase.snapshot_steps_max = max((r["steps"] for r in runs), default=0)
                    phase.restarts = sum(max(0, r["steps"] - 1) for r in runs)
                    phase.busy_retries = sum(r["busy_retries"] for r in runs)
                    phase.wal_growth_max = max(
                        (r["wal_after"] - r["wal_before"] for r in runs), default=0
                    )
                    phase.snapshot_seconds = max((r["snapshot_seconds"] for r in runs), default=0)
                log(
                    f"  live {rate:g}/s, backups {label}: p50 {phase.p50_ms:.2f} ms, "
                    f"p99 {phase.p99_ms:.2f} ms, {phase.runs} backups, "
                    f"restarts {phase.restarts}"
                )
                phases.append(phase)
    return phases


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "writer":
        writer_main(Path(args[0]), float(args[1]), float(args[2]), Path(args[3]))
    elif command == "backups":
        backups_main(
            Path(args[0]),
            Path(args[1]),
            Path(args[2]),
            float(args[3]),
            Path(args[4]),
            int(args[5]) if len(args) > 5 else 0,
        )
    else:
        raise SystemExit(f"unknown command {command!r}")
