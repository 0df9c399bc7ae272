"""How long the code location takes to load with many databases, and how many definitions it
makes, against the code before issue 14 measured in the same run.

    .venv/bin/python bench/load.py                 # 1 and 200 databases, 5 reps, ~6 min
    .venv/bin/python bench/load.py --quick         # 1 and 20 databases, 1 rep (CI smoke)

Each measurement is a fresh process timed by /usr/bin/time (wall seconds, peak RSS):

- `import`: `python -c "import kotomi_backup_dagster.definitions"`, the code location's
  module, which builds every definition (what `dagster code-server start -m ...` loads);
- `snapshot`: the same, then the repository snapshot the code server sends the webserver
  and the daemon (every job's plan and config schema, every asset node): what the UI
  waits for;
- `dg list defs`: the public command, from process start (dg's own start-up included); this
  version only (the code before issue 14 was no dg project).

The peer is the package at the commit before issue 14 (`--before`, default 9c6006b),
extracted with `git archive` and put first on PYTHONPATH (the Python commands run outside
the repository, so its own package does not shadow the peer); the figures of both are taken
interleaved, in the same run. The report goes between `<!-- load:start -->` and
`<!-- load:end -->` in docs/benchmarks.md (`--quick`: bench/.cache/quick/load.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import BIN as VENV_BIN  # bench/harness.py
from harness import ROOT as REPO
from harness import markers, write_section

START, END = markers("load")
SNAPSHOT = (
    "from kotomi_backup_dagster.definitions import defs\n"
    "from dagster._core.remote_representation.external_data import RepositorySnap\n"
    "RepositorySnap.from_def(defs.get_repository_def())\n"
)
COUNT = (
    "import json\n"
    "from kotomi_backup_dagster.definitions import defs\n"
    "repo = defs.get_repository_def()\n"
    "print(json.dumps({'assets': len(repo.asset_graph.get_all_asset_keys()),\n"
    "    'asset checks': len(repo.asset_graph.asset_check_keys),\n"
    "    'jobs': len([n for n in repo.job_names if not n.startswith('__')]),\n"
    "    'schedules': len(repo.schedule_defs), 'sensors': len(repo.sensor_defs)}))\n"
)
COMMANDS = {
    "import": [str(VENV_BIN / "python"), "-c", "import kotomi_backup_dagster.definitions"],
    "snapshot": [str(VENV_BIN / "python"), "-c", SNAPSHOT],
    "dg list defs": [str(VENV_BIN / "dg"), "list", "defs", "--json"],
}
OUTSIDE = Path("/")  # the Python commands' working directory: not the repository


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def databases(count: int) -> str:
    return ",".join(f"db{i}=/srv/kotomi/db{i}.sqlite" for i in range(count)) if count > 1 else ""


def environment(count: int, package_root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
    env.update(VIRTUAL_ENV=str(VENV_BIN.parent), NO_COLOR="1")
    if count > 1:
        env["KOTOMI_BACKUP_DATABASES"] = databases(count)
    if package_root is not None:
        env["PYTHONPATH"] = str(package_root)
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *command],
        env=env,
        cwd=REPO if command[0].endswith("dg") else OUTSIDE,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command[-2:])} failed:\n{out.stderr[-2000:]}")
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss), out.stdout


def counts(env: dict[str, str]) -> dict[str, int]:
    """How many definitions of each kind the code location makes."""
    _, _, stdout = timed([str(VENV_BIN / "python"), "-c", COUNT], env)
    found: dict[str, int] = json.loads(stdout.strip().splitlines()[-1])
    return found


def extract(commit: str, into: Path) -> Path:
    archive = into / "before.tar"
    subprocess.run(
        ["git", "archive", "-o", str(archive), commit, "kotomi_backup_dagster"],
        cwd=REPO,
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,200", help="database counts, comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--before", default="9c6006b", help="the peer commit")
    parser.add_argument("--quick", action="store_true", help="1 and 20 databases, 1 rep")
    args = parser.parse_args()
    sizes = [1, 20] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps = 1 if args.quick else args.reps
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "kotomi_backup_dagster"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        before = extract(args.before, Path(tmp))
        versions = {"this": None, "before": before}
        results: dict[tuple[str, int, str], Samples] = {}
        defined: dict[tuple[str, int], dict[str, int]] = {}
        for count in sizes:
            for version, root in versions.items():
                defined[version, count] = counts(environment(count, root))
            for _ in range(reps):
                for version, root in versions.items():
                    env = environment(count, root)
                    for name, command in COMMANDS.items():
                        if name == "dg list defs" and version == "before":
                            continue
                        wall, rss, _ = timed(command, env)
                        sample = results.setdefault((version, count, name), Samples())
                        sample.seconds.append(wall)
                        sample.rss_kb.append(rss)
                        print(f"{count:>4} dbs {version:>6} {name:<12} {wall:6.2f} s", flush=True)
    report = render(sizes, reps, commit, args.before, results, defined)
    target = REPO / ("bench/.cache/quick/load.md" if args.quick else "docs/benchmarks.md")
    write_section(target, "load", report)
    print(f"wrote {target.relative_to(REPO)}")


def render(
    sizes: list[int],
    reps: int,
    commit: str,
    before: str,
    results: dict[tuple[str, int, str], Samples],
    defined: dict[tuple[str, int], dict[str, int]],
) -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    lines = [
        START,
        "## Many databases: loading the code location",
        "",
        f"`.venv/bin/python bench/load.py --sizes {','.join(map(str, sizes))} --reps {reps}` "
        f"on the package at {commit} against {before} (before issue 14), interleaved in the "
        f"same run; {cpus} CPUs, load average {load:.1f} at the end (a machine shared with "
        "other work: above 2, every figure is inflated alike). Medians of "
        f"{reps} fresh processes, wall time by `/usr/bin/time`.",
        "",
    ]
    big = max(sizes)
    this = results["this", big, "snapshot"].median
    loads = results["this", big, "import"].median
    lines += [
        f"**{big} databases: the code location loads in {loads:.2f} s "
        f"(module import), {this:.2f} s with the snapshot the UI waits for**; before: "
        f"{results['before', big, 'import'].median:.2f} s and "
        f"{results['before', big, 'snapshot'].median:.2f} s "
        f"({this / results['before', big, 'snapshot'].median:.2f}x). Target, at most 3 s: "
        f"{'met' if loads <= 3 else 'not met'} for the import, "
        f"{'met' if this <= 3 else 'not met'} with the snapshot. The snapshot is mostly "
        "Dagster's own work per asset node and per job (each of the 5 jobs, the implicit "
        "asset job included, carries a plan and a config schema over its assets).",
        "",
        "| databases | version | import (s) | snapshot (s) | dg list defs (s) | peak RSS (MB) "
        "| vs before (snapshot) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for count in sizes:
        for version in ("this", "before"):
            get = results.__getitem__
            snap = get((version, count, "snapshot"))
            ratio = snap.median / get(("before", count, "snapshot")).median
            dg = results.get((version, count, "dg list defs"))
            lines.append(
                f"| {count} | {version} | {get((version, count, 'import')).median:.2f} "
                f"| {snap.median:.2f} | {f'{dg.median:.2f}' if dg else '—'} "
                f"| {max(snap.rss_kb) / 1024:.0f} | {ratio:.2f}x |"
            )
    lines += [
        "",
        "Definitions:",
        "",
        "| databases | version | assets | asset checks | jobs | schedules | sensors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for count in sizes:
        for version in ("this", "before"):
            c = defined[version, count]
            lines.append(
                f"| {count} | {version} | {c.get('assets', 0)} | {c.get('asset checks', 0)} "
                f"| {c.get('jobs', 0)} | {c.get('schedules', 0)} | {c.get('sensors', 0)} |"
            )
    lines += [
        "",
        "Schedules and sensors no longer grow with the databases: one schedule per cadence "
        "asks for one run per database at each tick, one health sensor and one prune sensor "
        "serve them all. Assets (7 per database, their key prefix the database's name) and "
        "their checks do grow; the jobs are one per area.",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
