"""What every benchmark here shares: paths, the demo databases, measuring a command as a
whole process, the machine's description, and the marked sections of docs/benchmarks.md.

Each benchmark script (run.py, paged.py, soak.py, load.py) writes its own section of
docs/benchmarks.md between `<!-- <name>:start -->` and `<!-- <name>:end -->`
(`write_section`); run.py, which rewrites the whole file, keeps the others (`marked_sections`).
Run the scripts as `python bench/<script>.py`: their folder is then on `sys.path`.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
BIN = Path(sys.executable).parent
NAME = "kotomi"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- inputs ----------------------------------------------------------------------------------


def ensure_db(mb: int) -> Path:
    """The cached demo database of `mb` MB (seed 1, as bench/memory.sh makes it)."""
    path = CACHE / f"kotomi-{mb}mb.db"
    if not path.exists():
        from kotomi_backup_dagster.demo import generate_demo_database

        log(f"generating {path.name} (about 45 s per GB)...")
        CACHE.mkdir(parents=True, exist_ok=True)
        generate_demo_database(path, size_bytes=mb * 1_000_000, seed=1)
    return path


def ensure_age_key() -> tuple[Path, str]:
    import pyrage

    key = CACHE / "age-key.txt"
    if not key.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        key.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    identity = pyrage.x25519.Identity.from_str(key.read_text().strip())
    return key, str(identity.to_public())


def fakeclock() -> Path:
    """bench/fakeclock.c built once (gcc): a wall clock moved forward, nothing else (soak.py,
    locks.py)."""
    source = BENCH / "fakeclock.c"
    built = CACHE / "fakeclock.so"
    if not built.exists() or built.stat().st_mtime < source.stat().st_mtime:
        CACHE.mkdir(parents=True, exist_ok=True)
        argv = ["gcc", "-shared", "-fPIC", "-O2", "-o", str(built), str(source), "-ldl"]
        subprocess.run(argv, check=True)
    return built


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    stored: int = 0


def measure(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, stdout: Path | None = None
) -> Sample:
    """Run one command; wall, CPU (process tree) and peak RSS from wait4.

    Its output goes to `stdout` if given (e.g. `--json`), else is discarded.
    """
    started = time.perf_counter()
    with open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} exited {proc.returncode}: {stderr.decode(errors='replace')[-800:]}"
        )
    return Sample(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "not installed"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    os_name = "unknown"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    import zstandard

    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": f"{os_name}, Linux {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "zstd": f"python-zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION})",
        "restic": first(["restic", "version"]),
        "sqlite3 shell": first(["sqlite3", "--version"])[:20],
        "gzip": first(["gzip", "--version"]),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


# -- report ----------------------------------------------------------------------------------


def engine_state() -> str:
    """The last commit of the package the CLI runs, and whether it has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("log", "-1", "--format=%h", "--", "kotomi_backup_dagster") or "unknown"
    dirty = git("status", "--porcelain", "--", "kotomi_backup_dagster")
    return head + (" plus uncommitted changes to kotomi_backup_dagster/" if dirty else "")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(out: Path, name: str, section: str) -> None:
    """Put `section` (which starts and ends with `name`'s markers) into `out`: in place of the
    previous one, or appended."""
    start_marker, end_marker = markers(name)
    text = out.read_text() if out.exists() else ""
    start, end = text.find(start_marker), text.find(end_marker)
    if start >= 0 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(end_marker) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section.rstrip("\n") + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def marked_sections(previous: Path, but: tuple[str, ...] = ()) -> list[str]:
    """Every marked section of an earlier file (markers included), in order, but `but`'s."""
    if not previous.exists():
        return []
    text = previous.read_text()
    found = re.finditer(r"<!-- ([a-z0-9_-]+):start -->.*?<!-- \1:end -->", text, re.DOTALL)
    return [m.group(0) for m in found if m.group(1) not in but]
