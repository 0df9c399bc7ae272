"""What the keeper's object locks cost at the default cadence, against a real S3 server.

A moto server with an Object Lock bucket (COMPLIANCE, two days of default retention) and this
process share one wall clock that runs simulated days (bench/fakeclock.c with an offset file:
moto stamps objects and judges locks by it). Each simulated 15 minutes a Kotomi-like writer
commits requests and a paged backup goes to two prefixes; at 02:00 a full backup goes too.
One prefix is pruned the way a single host does (role both, after an upload, at most hourly),
the other the way a keeper on its own host does (daily at 03:00), both with the keeper's lock
memory. Counted per simulated day: lock reads (HeadObject), lock extensions
(PutObjectRetention), every request the prunes sent, and the objects kept.

    .venv/bin/python bench/locks.py --quick     # 10 MB, half a simulated day, ~2 min (CI)
    .venv/bin/python bench/locks.py             # 100 MB, seven days: docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import CACHE, ROOT, ensure_db, fakeclock, log, write_section

BUCKET = "kotomi-locks-bench"
MODES = {"both": "hourly after upload (role both)", "split": "daily at 03:00 (a keeper)"}


class Clock:
    """The shared wall clock: this process and the server read the offset file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def set(self, moment: datetime) -> None:
        real = datetime.now(UTC) - timedelta(microseconds=self.offset_ns() // 1000)
        offset = int((moment - real).total_seconds() * 1e9)
        os.pwrite(self.fd, struct.pack("q", max(offset, 0)), 0)

    def offset_ns(self) -> int:
        value: int = struct.unpack("q", os.pread(self.fd, 8, 0))[0]
        return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (CACHE / "locks-moto.log").open("wb") as log_file:  # why, if it ever dies
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,  # its own process group: no signal meant for us reaches it
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto did not start")


def simulate(days: float, mb: int) -> dict[str, Any]:
    import boto3

    from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi
    from kotomi_backup_dagster.engine.backup import run_backup
    from kotomi_backup_dagster.engine.keeper.guard import KeeperSettings
    from kotomi_backup_dagster.engine.prune import prune_store
    from kotomi_backup_dagster.engine.retention import RetentionPolicy
    from kotomi_backup_dagster.engine.settings import BackupSettings
    from kotomi_backup_dagster.engine.stores import open_store

    work = CACHE / "locks"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    db = work / "kotomi.db"
    db.write_bytes(ensure_db(mb).read_bytes())
    clock = Clock(Path(os.environ["FAKECLOCK_OFFSET_FILE"]))
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    clock.set(start)
    proc, endpoint = start_moto()
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
        )
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2}},
            },
        )
        urls = {mode: f"s3://{BUCKET}/{mode}" for mode in MODES}
        policy = RetentionPolicy.from_env()  # the defaults: 7 daily, 4 weekly, 12 monthly, 3 yearly
        keepers = {"both": KeeperSettings(), "split": KeeperSettings(role="keeper")}
        conn = connect_like_kotomi(db)
        writer = KotomiWriter(conn, random.Random(7))
        per_day: dict[str, dict[int, dict[str, int]]] = {
            m: defaultdict(lambda: defaultdict(int)) for m in MODES
        }
        backups = 0
        for step in range(int(days * 96)):
            moment = start + timedelta(minutes=15 * step)
            clock.set(moment)
            for _ in range(60):  # a quiet site: 60 requests per 15 minutes
                writer.request()
            kinds = ["paged"] + (["full"] if moment.hour == 2 and moment.minute == 0 else [])
            for kind in kinds:
                run_backup(
                    BackupSettings.from_env(
                        db_path=db,
                        urls=tuple(urls.values()),
                        backup_format=kind,
                        staging_dir=work / "staging",
                    )
                )
                backups += 1
            day = step // 96
            due = {"both": moment.minute == 0, "split": moment.hour == 3 and moment.minute == 0}
            for mode, url in urls.items():
                if not due[mode]:
                    continue
                store = open_store(url)
                sent = getattr(store, "sent", 0)
                result = prune_store(
                    store,
                    "kotomi",
                    policy,
                    keeper=keepers[mode],
                    lock_memory=work / f"locks-{mode}.json",
                )
                counts = per_day[mode][day]
                counts["prunes"] += 1
                counts["prune_requests"] += getattr(store, "sent", 0) - sent
                if result.locks is not None:
                    counts["lock_requests"] += result.locks.requests
                    counts["extensions"] += len(result.locks.extended)
                    counts["lock_reads"] += result.locks.requests - len(result.locks.extended)
                counts["kept"] = len(result.kept)
                counts["removed"] += len(result.removed)
                counts["packs"] = len(store.list_children("kotomi/packs"))
            if step % 96 == 95:
                log(f"day {day + 1}: {backups} backups; both {dict(per_day['both'][day])}")
                partial = {m: {d: dict(c) for d, c in v.items()} for m, v in per_day.items()}
                (CACHE / "locks.json").write_text(json.dumps(partial, indent=2))
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {m: {d: dict(c) for d, c in days_.items()} for m, days_ in per_day.items()}


def report(results: dict[str, Any], days: float, mb: int) -> str:
    lines = [
        "<!-- locks:start -->",
        "## What object locks cost (`bench/locks.py`)",
        "",
        f"A {mb} MB Kotomi database, {days:g} simulated days at the default cadence (a paged "
        "backup every 15 minutes, a full one daily at 02:00, the default tiers 7/4/12/3), to a "
        "moto S3 bucket with Object Lock (COMPLIANCE, 2 days of default retention) whose clock "
        "runs the simulated days with this process's (bench/fakeclock.c). Requests counted by "
        "the store (every attempt); S3 prices: $0.005 per 1,000 PUT-class (PutObjectRetention), "
        "$0.0004 per 1,000 GET-class (HeadObject).",
        "",
        "| keeper | day | prunes | lock reads | lock extensions | all prune requests "
        "| kept backups | packs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, label in MODES.items():
        for day, c in sorted(results[mode].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {label} | {int(day) + 1} | {c.get('prunes', 0)} | {c.get('lock_reads', 0)} "
                f"| {c.get('extensions', 0)} | {c.get('prune_requests', 0)} | {c.get('kept', 0)} "
                f"| {c.get('packs', 0)} |"
            )
    lines.append("")
    for mode, label in MODES.items():
        steady = [c for d, c in results[mode].items() if int(d) >= 1] or list(
            results[mode].values()
        )
        ext = sum(c.get("extensions", 0) for c in steady) / max(len(steady), 1)
        reads = sum(c.get("lock_reads", 0) for c in steady) / max(len(steady), 1)
        cost = ext * 0.005 / 1000 + reads * 0.0004 / 1000
        lines.append(
            f"- {label}: {ext:.0f} lock extensions and {reads:.0f} lock reads a day after the "
            f"first (about ${cost * 30:.4f} a month)."
        )
    lines.append("")
    lines.append(
        "Reading the figures: an extension happens when a kept object's lock falls short of "
        "its need, so each day's new kept backups (the day's newest, its full archive, the "
        "packs they name) cost a few each, and a pack once per slack (10 days); the lock "
        'memory makes an hourly keeper read each lock about once a day. "kept backups" of '
        "the daily keeper include the last day's 15-minute backups, which it does not remove "
        "while they settle (docs/immutability.md); they rest on the bucket's default "
        'retention. "All prune requests" are everything the prunes sent (listings, '
        "manifests, drill records, page maps, pack checks, repacks, locks): they grow with "
        "the packs a paged series keeps, with or without locks."
    )
    lines.append("")
    lines.append(
        "Command: `.venv/bin/python bench/locks.py` (`--days`, `--size`; `--quick` is the CI smoke "
        "run). Raw counts: `bench/.cache/locks.json`."
    )
    lines.append("<!-- locks:end -->")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--size", type=int, default=100, help="database size in MB")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    days, mb = (0.5, 10) if args.quick else (args.days, args.size)
    if "FAKECLOCK_OFFSET_FILE" not in os.environ:  # run again on the shared clock
        offset = CACHE / "locks-clock"
        CACHE.mkdir(parents=True, exist_ok=True)
        offset.write_bytes(struct.pack("q", 0))
        env = {**os.environ, "LD_PRELOAD": str(fakeclock()), "FAKECLOCK_OFFSET_FILE": str(offset)}
        return subprocess.run([sys.executable, *sys.argv], env=env, check=False).returncode
    results = simulate(days, mb)
    (CACHE / "locks.json").write_text(json.dumps(results, indent=2))
    section = report(results, days, mb)
    out = CACHE / "quick" / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("")
    write_section(out, "locks", section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
