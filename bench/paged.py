#!/usr/bin/env python3
"""Hourly backups under a Kotomi-like write load: the paged format against full and restic.

    .venv/bin/python bench/paged.py              # 100 MB and 1 GB, 3 hours; writes docs/
    .venv/bin/python bench/paged.py --quick      # 10 MB, 2 hours, to bench/.cache/quick/

A copy of the cached demo database is the live database (WAL, opened like Kotomi). Hour 0 backs
it up once with each tool: `kotomi-backup backup` (full format) to one destination,
`kotomi-backup backup --format paged` to another, restic to a fresh repository. Every later hour
runs seeded `KotomiWriter.request()`s until about 3 % of the database's pages differ from the
previous hour's consistent copy (page-by-page hashes of two snapshots), then the three backups,
interleaved (the order reversed every other hour), each one process measured by run.py's
`measure()`: wall, CPU, peak RSS, and the bytes it added to its destination. The floor is the
changed pages themselves, concatenated and compressed with zstd level 3. After the last hour the
newest backup of each format is restored into a fresh file, interleaved, `--reps` times.
The results go into docs/benchmarks.md between the `paged` markers. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness import (  # bench/harness.py
    BENCH,
    BIN,
    CACHE,
    NAME,
    ROOT,
    Sample,
    engine_state,
    ensure_db,
    log,
    machine,
    markers,
    measure,
    tree_size,
    write_section,
)

PAGED_START, PAGED_END = markers("paged")

TARGET_CHURN = 0.03
CHURN_TOLERANCE = 0.95  # an hour's churn is reached at 95 % of the target (2.85 % for 3 %)
MAX_CHECKS = 12  # calibration rounds per hour
PAGED_ARGS = ["--format", "paged"]
TOOLS = ("full", "paged", "restic")
TOOL_LABELS = {
    "full": "kotomi-backup backup (full format)",
    "paged": "kotomi-backup backup --format paged",
    "restic": "restic backup (of the hour's consistent copy)",
}
STAGES = ("snapshot", "verify", "archive", "upload")  # in `kotomi-backup backup --json`
RESTORES = ("full_restore", "paged_restore", "full_fetch", "paged_fetch")
RESTORE_LABELS = {
    "full_restore": "`restore latest`, full format",
    "paged_restore": "`restore latest`, paged format",
    "full_fetch": "checksum only (bench/fetch.py), full format",
    "paged_fetch": "checksum only (bench/fetch.py), paged format",
}


# -- the live database and its churn ---------------------------------------------------------


DIGEST = 16  # bytes of BLAKE2b per page


def pages_main(live: Path, copy: Path, hashes: Path, previous: Path | None) -> None:
    """The page-accounting process: snapshot `live` to `copy`, write its page hashes to `hashes`,
    compare them with `previous`; prints a JSON line (pages, changed, floor, ...).

    A process of its own so that the harness stays small: a child's peak RSS from wait4 starts
    at its parent's peak (exec keeps the parent's high-water mark), so a harness holding the
    page hashes would inflate every measured process's RSS.
    """
    import zstandard

    from kotomi_backup_dagster.engine.snapshot import take_snapshot

    snap = take_snapshot(live, copy, durable=False)
    old = previous.read_bytes() if previous is not None else b""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    floor = pages = changed = 0
    with copy.open("rb") as fh, hashes.open("wb") as out:
        while page := fh.read(snap.page_size):
            digest = hashlib.blake2b(page, digest_size=DIGEST).digest()
            out.write(digest)
            if old[pages * DIGEST : (pages + 1) * DIGEST] != digest:
                changed += 1
                floor += len(compressor.compress(page))  # the changed pages, concatenated
            pages += 1
    floor += len(compressor.flush())
    info = {
        "pages": pages,
        "changed": changed if previous is not None else 0,
        "page_size": snap.page_size,
        "floor": floor if previous is not None else 0,
        "snapshot_seconds": snap.seconds,
    }
    print(json.dumps(info), flush=True)


@dataclass
class Churn:
    """What one hour of writes did, measured between two consistent copies."""

    requests: int
    pages: int
    changed: int
    page_size: int
    floor: int  # zstd-3 of the changed pages
    checks: int  # snapshots taken to reach the target
    snapshot_seconds: float  # the last take_snapshot (restic's input), not in restic's figure

    @property
    def fraction(self) -> float:
        return self.changed / self.pages


def writer_main(db: Path, seed: int) -> None:
    """The Kotomi-like writer process: for each line `N` on stdin, N requests, then `ok N`.

    A process of its own, as Kotomi is: the bench process takes snapshots of the same file, and
    one process's plain open()/close() of a database file drops the POSIX locks its SQLite
    connections hold on it (https://www.sqlite.org/howtocorrupt.html, 2.2).
    """
    from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi

    conn = connect_like_kotomi(db)  # WAL, Kotomi's pragmas
    writer = KotomiWriter(conn, random.Random(seed))
    for _ in range(20):  # first requests create the writer's sites and pages
        writer.request()
    print("ok 20", flush=True)
    for line in sys.stdin:
        count = int(line)
        for _ in range(count):
            writer.request()
        print(f"ok {count}", flush=True)
    conn.close()


class LiveDatabase:
    """The live database, the writer process on it, and the previous hour's page hashes.

    `copy` is the consistent copy of the current hour (`take_snapshot`): hashed against the
    previous hour's, and the file restic backs up. Its directory holds the page hashes.
    """

    def __init__(self, path: Path, copy: Path, seed: int) -> None:
        self.path = path
        self.copy = copy
        script = [str(BIN / "python"), str(Path(__file__).resolve()), "writer"]
        self.proc = subprocess.Popen(
            [*script, str(path), str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answer()
        self.hashes = copy.with_name("pages.hashes")  # the previous hour's page hashes
        self.hashes_new = copy.with_name("pages.hashes.new")

    def _answer(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ok"):
            raise RuntimeError(f"the writer process failed (exit {self.proc.wait()})")

    def write(self, requests: int) -> None:
        """`requests` Kotomi-like requests, each committed before this returns."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{requests}\n")
        self.proc.stdin.flush()
        self._answer()

    def _account(self, previous: Path | None) -> dict[str, float]:
        """Snapshot to `copy` and hash its pages (pages_main, in its own process)."""
        script = [str(BIN / "python"), str(Path(__file__).resolve()), "pages"]
        argv = [*script, str(self.path), str(self.copy), str(self.hashes_new)]
        out = subprocess.run(
            [*argv, *([str(previous)] if previous else [])],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        info: dict[str, float] = json.loads(out)
        return info

    def baseline(self) -> int:
        """Hash the base state; its page count."""
        info = self._account(None)
        self.hashes_new.replace(self.hashes)
        return int(info["pages"])

    def advance(self, target: float, first_batch: int) -> Churn:
        """Write requests in batches until `target` of the pages changed since the last hour.

        The distinct pages written grow slower than the requests (later requests hit pages
        already changed), so extrapolating the average rate undershoots, then tops up.
        """
        done = 0
        batch = max(1, first_batch)
        checks = 0
        while True:
            self.write(batch)
            done += batch
            checks += 1
            info = self._account(self.hashes)
            changed, pages = int(info["changed"]), int(info["pages"])
            wanted = target * pages
            if changed >= CHURN_TOLERANCE * wanted or checks >= MAX_CHECKS:
                break
            rate = max(changed, 1) / done
            batch = max(1, round((wanted - changed) / rate))
        self.hashes_new.replace(self.hashes)
        return Churn(
            requests=done,
            pages=pages,
            changed=changed,
            page_size=int(info["page_size"]),
            floor=int(info["floor"]),
            checks=checks,
            snapshot_seconds=float(info["snapshot_seconds"]),
        )

    def close(self) -> int:
        """End the writer process (it closes its connection); its exit status."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return self.proc.wait(timeout=60)


# -- one database size -----------------------------------------------------------------------


@dataclass
class Hour:
    hour: int
    churn: Churn | None  # None for hour 0, the base
    samples: dict[str, Sample]
    order: list[str]
    # Our backups' own account (`--json`): seconds per stage, and new_pages for the paged one.
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


def stages_of(report: Path) -> dict[str, float]:
    """Seconds per stage of one `kotomi-backup backup --json` run, and the pages it stored."""
    data = json.loads(report.read_text())
    stages = {k: float(v) for k, v in data.get("seconds", {}).items()}
    destination = (data.get("destinations") or [{}])[0]
    stages["upload"] = float(destination.get("seconds") or 0.0)
    paged = (destination.get("manifest") or data.get("manifest") or {}).get("paged")
    if paged:
        stages["new_pages"] = float(paged.get("new_pages", 0))
    stages["read_in_place"] = float(data.get("snapshot_method") == "live read")
    return stages


@dataclass
class SizeRun:
    mb: int
    db_bytes: int
    hours: list[Hour] = field(default_factory=list)
    restores: dict[str, list[Sample]] = field(default_factory=dict)
    restore_order: list[str] = field(default_factory=list)
    fetch_error: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)

    def later(self) -> list[Hour]:
        return [h for h in self.hours if h.churn is not None]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def run_size(mb: int, hours: int, reps: int, seed: int, target: float) -> SizeRun:
    cached = ensure_db(mb)
    env = dict(os.environ)
    for var in ("KOTOMI_BACKUP_AGE_RECIPIENTS", "KOTOMI_BACKUP_FORMAT", "KOTOMI_BACKUP_NAME"):
        env.pop(var, None)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    cli = [str(BIN / "kotomi-backup")]
    result = SizeRun(mb=mb, db_bytes=cached.stat().st_size)
    with tempfile.TemporaryDirectory(prefix=f"kotomi-paged-{mb}-", dir=CACHE) as tmp:
        work = Path(tmp)
        live_path = work / "live" / f"{NAME}.db"
        live_path.parent.mkdir()
        shutil.copyfile(cached, live_path)  # the cached file itself is never written
        env["KOTOMI_BACKUP_STAGING_DIR"] = str(work / "staging")
        restic_env = {
            **env,
            "RESTIC_PASSWORD": "bench-only-password",
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        }
        dests = {"full": work / "full", "paged": work / "paged", "restic": work / "restic"}
        subprocess.run(  # not timed: the repository exists before the first backup
            ["restic", "init", "--repo", str(dests["restic"]), "-q"], env=restic_env, check=True
        )
        live = LiveDatabase(live_path, work / "copy" / f"{NAME}.db", seed)

        report = work / "backup.json"

        def backup(tool: str) -> tuple[Sample, dict[str, float]]:
            """One measured backup; our tools' stage seconds from their `--json` report."""
            dest = dests[tool]
            before = tree_size(dest) if dest.exists() else 0
            if tool == "restic":
                argv = ["restic", "--repo", str(dest), "backup", "-q", str(live.copy)]
                sample, account = measure(argv, restic_env), {}
            else:
                argv = [*cli, "backup", "--db", str(live_path), "--to", str(dest), "--json"]
                argv += PAGED_ARGS if tool == "paged" else []
                sample = measure(argv, env, stdout=report)
                account = stages_of(report)
            sample.stored = tree_size(dest) - before
            return sample, account

        try:
            first_batch = max(1, round(target * live.baseline() / 10))
            for hour in range(hours + 1):
                churn = None
                if hour:
                    churn = live.advance(target, first_batch)
                    first_batch = max(1, round(churn.requests * 0.95))
                    log(
                        f"{mb:>5} MB hour {hour}: {churn.requests} requests, {churn.changed} of "
                        f"{churn.pages} pages changed ({pct(churn.fraction)}, {churn.checks} "
                        f"checks), floor {churn.floor / 1e6:.2f} MB"
                    )
                order = list(TOOLS) if hour % 2 == 0 else list(reversed(TOOLS))
                samples: dict[str, Sample] = {}
                stages: dict[str, dict[str, float]] = {}
                for tool in order:
                    s, account = backup(tool)
                    samples[tool], stages[tool] = s, account
                    log(
                        f"{mb:>5} MB hour {hour} {tool:7s} {s.wall:7.2f} s wall {s.cpu:7.2f} s "
                        f"cpu {s.rss_mb:6.0f} MB rss {s.stored / 1e6:9.2f} MB added"
                    )
                result.hours.append(Hour(hour, churn, samples, order, stages))
        finally:
            status = live.close()
        if status != 0:
            raise RuntimeError(f"the writer process exited {status}")
        result.checksums["copy"] = sha256_file(live.copy)
        restore_all(result, cli, env, dests, work, reps)
    return result


def restore_all(
    result: SizeRun,
    cli: list[str],
    env: dict[str, str],
    dests: dict[str, Path],
    work: Path,
    reps: int,
) -> None:
    """Restore the newest backup of each format into fresh files, interleaved, `reps` times."""

    def restore(fmt: str) -> Callable[[Path], Sample]:
        def run(target: Path) -> Sample:
            argv = [*cli, "restore", "latest", "--db", str(target), "--from", str(dests[fmt])]
            return measure([*argv, "--json"], env)

        return run

    def fetch(fmt: str) -> Callable[[Path], Sample]:
        def run(target: Path) -> Sample:
            script = [str(BIN / "python"), str(BENCH / "fetch.py")]
            return measure([*script, str(dests[fmt]), NAME, str(target)], env)

        return run

    cases: dict[str, Callable[[Path], Sample]] = {
        "full_restore": restore("full"),
        "paged_restore": restore("paged"),
        "full_fetch": fetch("full"),
        "paged_fetch": fetch("paged"),
    }
    # bench/fetch.py goes through the engine's fetch_backup; if it cannot read one of the
    # formats, both fetch cases are left out (a ratio needs both).
    for fmt in ("full", "paged"):
        probe = work / f"probe-{fmt}" / f"{NAME}.db"
        probe.parent.mkdir()
        try:
            cases[f"{fmt}_fetch"](probe)
        except RuntimeError as exc:
            result.fetch_error = f"{fmt}: {str(exc).strip().splitlines()[-1]}"
            log(f"bench/fetch.py does not restore the {fmt} format: {result.fetch_error}")
            del cases["full_fetch"], cases["paged_fetch"]
            break
        finally:
            shutil.rmtree(probe.parent, ignore_errors=True)
    keys = [k for k in RESTORES if k in cases]
    for rep in range(reps):
        ordered = keys if rep % 2 == 0 else list(reversed(keys))
        result.restore_order.append(f"{result.mb} MB restore rep {rep + 1}: " + " ".join(ordered))
        for key in ordered:
            out = work / f"restore-{key}-{rep}"
            out.mkdir()
            target = out / f"{NAME}.db"
            sample = cases[key](target)
            result.restores.setdefault(key, []).append(sample)
            if rep == 0:
                result.checksums[key] = sha256_file(target)
            shutil.rmtree(out, ignore_errors=True)
            log(
                f"{result.mb:>5} MB restore rep {rep + 1} {key:13s} {sample.wall:7.2f} s wall "
                f"{sample.cpu:7.2f} s cpu {sample.rss_mb:6.0f} MB rss"
            )


# -- report ----------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def span(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else ""


def mb_text(n: float) -> str:
    return f"{n / 1e6:.2f}"


def pct(fraction: float) -> str:
    return f"{fraction * 100:.2f} %"


@dataclass
class Target:
    label: str
    ours: str
    peer: str
    ratios: list[float]  # per hour or per repetition
    ratio: float  # of medians
    limit: float


def targets(run: SizeRun) -> list[Target]:
    hours = run.later()
    paged = [h.samples["paged"] for h in hours]
    full = [h.samples["full"] for h in hours]
    restic = [h.samples["restic"] for h in hours]
    floors = [float(h.churn.floor) for h in hours if h.churn]
    stored = [float(s.stored) for s in paged]
    rows = [
        Target(
            "bytes stored by a paged backup vs zstd-3 of the changed pages",
            f"{mb_text(med(stored))} MB",
            f"{mb_text(med(floors))} MB",
            [s / f for s, f in zip(stored, floors, strict=True)],
            med(stored) / med(floors),
            2.0,
        ),
        Target(
            "bytes stored by a paged backup vs restic, same change",
            f"{mb_text(med(stored))} MB",
            f"{mb_text(med([float(s.stored) for s in restic]))} MB",
            [p.stored / r.stored for p, r in zip(paged, restic, strict=True)],
            med(stored) / med([float(s.stored) for s in restic]),
            0.1,
        ),
        Target(
            "paged backup time vs full-format backup time",
            f"{med([s.wall for s in paged]):.2f} s",
            f"{med([s.wall for s in full]):.2f} s",
            [p.wall / f.wall for p, f in zip(paged, full, strict=True)],
            med([s.wall for s in paged]) / med([s.wall for s in full]),
            0.5,
        ),
    ]
    for kind, label in (("restore", "`restore latest`"), ("fetch", "checksum-only restore")):
        ours, peer = run.restores.get(f"paged_{kind}"), run.restores.get(f"full_{kind}")
        if not ours or not peer:
            continue
        a, b = med([s.wall for s in ours]), med([s.wall for s in peer])
        rows.append(
            Target(
                f"{label} of the newest paged backup vs of a full backup",
                f"{a:.2f} s",
                f"{b:.2f} s",
                [x.wall / y.wall for x, y in zip(ours, peer, strict=True)],
                a / b,
                1.5,
            )
        )
    return rows


def render(runs: list[SizeRun], command: str, info: dict[str, str], hours: int, reps: int) -> str:
    big = max(runs, key=lambda r: r.mb)
    churns = [h.churn.fraction for h in big.later() if h.churn]
    lines = [
        PAGED_START,
        "## Hourly backups: paged format against full and restic",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {hours} hours after "
        f"a base backup, about {TARGET_CHURN * 100:.0f} % of the pages changed per hour "
        f"(achieved at {big.mb} MB: {', '.join(pct(c) for c in churns)}), {reps} interleaved "
        f"restore repetition{'' if reps == 1 else 's'}. Rerun that command to check the "
        f"figures. Engine: kotomi_backup_dagster/ at commit {info['engine']}. Machine: "
        f"{info['cpu']}; load {info['load']}; bench time {info['bench time']}.",
        "",
        "A copy of the demo database is the live database (WAL, opened with Kotomi's pragmas). "
        "Between hours, a seeded `KotomiWriter.request()` loop (comments, reactions, each request "
        "one `BEGIN IMMEDIATE ... COMMIT`) writes until about 3 % of the pages differ from the "
        "previous hour's consistent copy (`take_snapshot`, page-by-page BLAKE2b); no writes run "
        "during the backups. Each hour then runs three backups, interleaved and in reverse order "
        "every other hour, each one process measured by `wait4`: `kotomi-backup backup` (full "
        "format, quick check) to one destination, the same with `--format paged` to another, and "
        "`restic backup` of the hour's consistent copy into one repository (hour 0 is the base "
        "backup of each). *Added* is the destination's size after minus before. The *floor* is "
        "the changed pages themselves, concatenated and compressed with zstd level 3.",
        "",
        f"### Targets ({big.mb} MB database, medians over hours 1-{hours})",
        "",
        "| target | paged | peer | ratio | per-hour range | limit | met |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for t in targets(big):
        met = "yes" if t.ratio <= t.limit else "**no**"
        lines.append(
            f"| {t.label} | {t.ours} | {t.peer} | {t.ratio:.3f}x | {span(t.ratios)} | "
            f"{t.limit:.2f}x | {met} |"
        )
    lines += [
        "",
        "Restore rows: ranges are per repetition, not per hour. `restore latest` verifies both "
        "sha256s, runs a full `integrity_check` and compares row counts; `bench/fetch.py` stops "
        "after the sha256s (what restic's restore checks).",
    ]
    later = big.later()
    other = [
        ("CPU time, paged vs full-format backup", "paged", "full", "cpu"),
        ("wall time, paged backup vs restic backup", "paged", "restic", "wall"),
        ("bytes added, paged vs full-format backup", "paged", "full", "stored"),
    ]
    lines += ["", "Other ratios, same hours:", "", "| comparison | ratio | per-hour range |"]
    lines += ["|---|---:|---:|"]
    for label, a, b, attr in other:
        xs = [float(getattr(h.samples[a], attr)) for h in later]
        ys = [float(getattr(h.samples[b], attr)) for h in later]
        ratios = [x / y for x, y in zip(xs, ys, strict=True)]
        lines.append(f"| {label} | {med(xs) / med(ys):.3f}x | {span(ratios)} |")
    if big.fetch_error:
        lines += ["", f"`bench/fetch.py` could not restore a backup: {big.fetch_error}."]
    sized = sorted(runs, key=lambda r: r.mb)
    parts = []
    for label, pick in (("base backup", lambda r: r.hours[:1]), ("hourly backups", SizeRun.later)):
        peaks = [max(h.samples["paged"].rss_mb for h in pick(r)) for r in sized]
        text = ", ".join(f"{p:.0f} MB at {r.mb} MB" for p, r in zip(peaks, sized, strict=True))
        growth = f" ({peaks[-1] - peaks[0]:+.0f} MB)" if len(peaks) > 1 else ""
        parts.append(f"{label} {text}{growth}")
    lines += ["", f"Peak RSS of the paged backup: {'; '.join(parts)}."]
    for run in sorted(runs, key=lambda r: r.mb):
        lines += render_size(run)
    lines += [
        "",
        "### Reading these figures",
        "",
        "- restic backs up the hour's consistent copy, the file the churn was measured on (a "
        "live WAL database is not a consistent file); making that copy is not in restic's "
        "time (the *copy* column). Our backups take their own snapshot inside the timed run. "
        "restic 0.14 compresses (repository format 2) and chunks by content.",
        "- The paged format stores each changed page whole and compressed; the floor is what an "
        "ideal page-level incremental backup would store. A ratio near 1 means the pack and "
        "page-map overhead is small.",
        "- Stages: both formats take the same snapshot, and run the quick check beside their "
        "archive stage. The full format's archive stage compresses the whole snapshot; the "
        "paged one's hashes every page (and the whole file), then its upload packs only the "
        "pages the destination lacks.",
        "- The same load hits every tool alike (interleaved, order reversed every other hour); "
        "the machine is shared, so single runs vary by 20-30 %.",
        "",
        "Order of the runs:",
        "",
    ]
    for run in sorted(runs, key=lambda r: r.mb):
        for h in run.hours:
            lines.append(f"- {run.mb} MB hour {h.hour}: {' '.join(h.order)}")
        lines += [f"- {o}" for o in run.restore_order]
    lines.append(PAGED_END)
    return "\n".join(lines) + "\n"


def render_size(run: SizeRun) -> list[str]:
    lines = [
        "",
        f"### {run.mb} MB database ({run.db_bytes / 1e6:.0f} MB)",
        "",
        "| hour | requests | pages changed | floor (MB) | paged added (MB) | paged / floor | "
        "restic added (MB) | paged / restic | full (s) | paged (s) | paged / full | copy (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in run.hours:
        p, f, r = h.samples["paged"], h.samples["full"], h.samples["restic"]
        c = h.churn
        changed = f"{c.changed} of {c.pages} ({pct(c.fraction)})" if c else "base"
        floor = mb_text(c.floor) if c else ""
        by_floor = f"{p.stored / c.floor:.2f}x" if c else ""
        copy_s = f"{c.snapshot_seconds:.2f}" if c else ""
        lines.append(
            f"| {h.hour} | {c.requests if c else ''} | {changed} | {floor} | {mb_text(p.stored)} "
            f"| {by_floor} | {mb_text(r.stored)} | {p.stored / r.stored:.3f}x | {f.wall:.2f} "
            f"| {p.wall:.2f} | {p.wall / f.wall:.2f}x | {copy_s} |"
        )
    lines += [
        "",
        "Our backups' own account of their stages (`--json`: seconds per stage, and the pages "
        "the paged backup stored against those the bench counted as changed). A paged backup "
        "marked *read in place* took no copy: its snapshot stage is one pass over the live "
        "database that hashes every page while `quick_check` runs on the same read "
        "transaction (so its verify seconds lie inside its snapshot seconds), and its archive "
        "stage has nothing left to do:",
        "",
        "| hour | format | wall (s) | snapshot (s) | verify (s) | archive (s) | upload (s) | "
        "pages stored / changed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for h in run.hours:
        for tool in ("full", "paged"):
            st = h.stages.get(tool, {})
            new_pages = st.get("new_pages")
            stored = "" if new_pages is None else f"{new_pages:.0f}"
            if stored and h.churn:
                stored += f" / {h.churn.changed}"
            cells = " | ".join(f"{st.get(k, 0.0):.2f}" for k in STAGES)
            label = f"{tool}, read in place" if st.get("read_in_place") else tool
            wall = h.samples[tool].wall
            lines.append(f"| {h.hour} | {label} | {wall:.2f} | {cells} | {stored} |")
    lines += [
        "",
        "| hour | tool | wall (s) | CPU (s) | peak RSS (MB) | added (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for h in run.hours:
        for tool in TOOLS:
            s = h.samples[tool]
            lines.append(
                f"| {h.hour} | {TOOL_LABELS[tool]} | {s.wall:.2f} | {s.cpu:.2f} | "
                f"{s.rss_mb:.0f} | {mb_text(s.stored)} |"
            )
    if run.restores:
        lines += [
            "",
            f"Restore of the newest backup (hour {run.hours[-1].hour}) into a fresh file, medians:",
            "",
            "| restore | wall (s) | CPU (s) | peak RSS (MB) | per-rep wall (s) | sha256 |",
            "|---|---:|---:|---:|---|---|",
        ]
        copy = run.checksums.get("copy", "")
        for key in RESTORES:
            samples = run.restores.get(key)
            if not samples:
                continue
            digest = run.checksums.get(key, "")
            same = "= hour's copy" if digest == copy else f"**differs** ({digest[:12]})"
            lines.append(
                f"| {RESTORE_LABELS[key]} | {med([s.wall for s in samples]):.2f} | "
                f"{med([s.cpu for s in samples]):.2f} | {max(s.rss_mb for s in samples):.0f} | "
                f"{', '.join(f'{s.wall:.2f}' for s in samples)} | {same} |"
            )
    return lines


def paged_flag_exists() -> bool:
    usage = subprocess.run(
        [str(BIN / "kotomi-backup"), "backup", "--help"], capture_output=True, text=True
    ).stdout
    return "--format" in usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="database sizes in MB")
    parser.add_argument("--hours", type=int, default=3, help="hourly backups after the base")
    parser.add_argument("--reps", type=int, default=3, help="interleaved restore repetitions")
    parser.add_argument("--churn", type=float, default=TARGET_CHURN, help="pages changed per hour")
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of the Kotomi-like writer (not 1, the demo's: its UUIDs are taken)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 MB, 2 hours, 1 rep")
    parser.add_argument("--out", type=Path, help="markdown report (default docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.hours, args.reps = "10", 2, 1
        args.out = args.out or CACHE / "quick" / "benchmarks.md"
    out: Path = args.out or ROOT / "docs" / "benchmarks.md"
    if shutil.which("restic") is None:
        raise SystemExit("bench: restic is not installed (scripts/install-system-deps.sh)")
    if not paged_flag_exists():
        raise SystemExit("bench: `kotomi-backup backup` has no --format option (paged format)")
    command = "bench/paged.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    info = machine()
    engine = engine_state()
    started = time.monotonic()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    runs = [run_size(mb, args.hours, args.reps, args.seed, args.churn) for mb in sizes]
    info["load"] += " at start; {:.2f} {:.2f} {:.2f} at end".format(*os.getloadavg())
    info["bench time"] = f"{time.monotonic() - started:.0f} s"
    if engine_state() != engine:
        engine = f"{engine} at start, {engine_state()} at end (it changed during the run)"
        log(f"the engine changed during the run: {engine}")
    info["engine"] = engine
    write_section(out, "paged", render(runs, command.strip(), info, args.hours, args.reps))
    (CACHE / "paged-last-run.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        writer_main(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["pages"]:
        live_db, copy_db, hashes_out, *prev = (Path(a) for a in sys.argv[2:])
        pages_main(live_db, copy_db, hashes_out, prev[0] if prev else None)
    else:
        sys.exit(main())
