"""What a backup leaves to the database's own process: CPU and disk priority, threads, and an
optional ceiling on how fast the live database is read.

Backups, drills, the restore test, prune and verify run in the background: they can wait,
Kotomi's writers cannot. A restore is the emergency and keeps normal priority. Everything
here is per thread, because Linux keeps the scheduling policy, the nice value and the I/O
priority per thread and a new thread starts with its creator's: lowering the thread that does
the work lowers every thread it starts (zstd's workers, the check beside the archive, the
hashers). Measured in docs/benchmarks.md ("A backup Kotomi does not feel").

- **CPU: SCHED_IDLE** (and nice 19, which `top` shows, and which holds where SCHED_IDLE is
  refused). Kotomi runs in a session or a container of its own, and the kernel shares the
  CPU between such groups before it weighs the threads inside them, so a nice value counts
  against Kotomi only where both share a group. A SCHED_IDLE thread is preempted whenever
  any other thread wakes on its core, whatever its group, and a core running only such
  threads counts as idle for a waking one: that is the rule chosen. Measured beside a writer
  in another session, both halved its p99 next to compression and were not told apart on a
  shared 2-core machine (docs/benchmarks.md). Between groups the backup keeps its share, so
  it is not starved; inside its own group (another backup, a restore run beside it) it gives
  way to everything. The compose file gives the containers runs execute in a low CPU weight
  (`cpu_shares`), which is what counts between containers.
- **Disk: the idle I/O class** (`ioprio_set`), served when no other request waits (BFQ,
  mq-deadline; `none`, the queue of most NVMe and virtual disks, ignores classes: a network
  volume is what `KOTOMI_BACKUP_READ_MBPS` is for). Except while the live database is read
  (`live_database_reads`): Kotomi needs the same pages, and a page whose read was issued at the
  idle class is one Kotomi waits for as long as that read waits (up to 10 s under mq-deadline,
  behind other I/O; measured 8.5 s). Those reads use best-effort level 7: the lowest level of
  the class that is never starved.
- **Never raised back.** An unprivileged thread cannot leave SCHED_IDLE or lower its nice
  value again, so the CLI lowers its main thread before a command's work (one process, one
  command), and the Dagster layer runs a step's work in a thread of its own (`in_background`):
  the step's thread, and whatever runs in it afterwards (a restore run in the same process),
  keep their priority. (I/O priority can be changed back: `live_database_reads` does.)
- **Threads** (`compression_threads`): at normal priority zstd's workers leave a core to the
  database's own process (one on two cores); at SCHED_IDLE they give way on every wakeup, so
  they may use every core (two on two); none on one core. The cores are those this process
  may run on (affinity) within its cgroup's CPU limit.
- **The read ceiling** (`ReadCeiling`): a token bucket in bytes per second, taken by the
  snapshot copy (engine/snapshot.py) and the in-place page read (engine/paged/liveread.py).

`KOTOMI_BACKUP_PRIORITY=normal` turns the priorities off (a host that runs nothing but
backups); threads and the ceiling do not depend on it. Only Linux is lowered; elsewhere the
calls do nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, get_args

Priority = Literal["low", "normal"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
BACKGROUND_NICE = 19
BACKGROUND_THREAD = "kotomi-low"  # the OS thread name of a Dagster step's work (`top -H`)

# <linux/ioprio.h>
IOPRIO_WHO_PROCESS = 1  # with a thread id: that thread only
IOPRIO_CLASS_SHIFT = 13
IO_CLASSES = {0: "none", 1: "realtime", 2: "best-effort", 3: "idle"}
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
LOWEST_BEST_EFFORT = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7
IDLE_IO = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
# (ioprio_set, ioprio_get) by machine; asm-generic's numbers for the newer architectures.
_IOPRIO_SYSCALLS = {
    "x86_64": (251, 252),
    "amd64": (251, 252),
    "i386": (289, 290),
    "i686": (289, 290),
    "aarch64": (30, 31),
    "arm64": (30, 31),
    "riscv64": (30, 31),
    "armv7l": (314, 315),
    "ppc64le": (273, 274),
    "s390x": (282, 283),
}
POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle"}
PR_SET_NAME = 15

R = TypeVar("R")


@dataclass(frozen=True)
class ThreadPriority:
    """One thread's priorities, as the kernel holds them."""

    policy: str  # other, batch, idle (SCHED_IDLE), fifo, rr
    nice: int
    io_class: str  # none (the default: best-effort derived from nice), realtime, best-effort, idle

    @property
    def lowered(self) -> bool:
        return self.policy == "idle" and self.io_class == "idle"


def _linux() -> bool:
    return sys.platform.startswith("linux")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _ioprio_calls() -> tuple[int, int] | None:
    return _IOPRIO_SYSCALLS.get(platform.machine().lower()) if _linux() else None


def _io_priority() -> int | None:
    """The calling thread's I/O priority value (class << 13 | level), or None where unknown."""
    calls = _ioprio_calls()
    value = _libc().syscall(calls[1], IOPRIO_WHO_PROCESS, 0) if calls else -1
    return None if value < 0 else int(value)


def _set_io_priority(value: int) -> str | None:
    """Set the calling thread's I/O priority; the reason when it could not be."""
    calls = _ioprio_calls()
    if calls is None:
        return f"I/O priority: unknown on {platform.machine()}"
    if _libc().syscall(calls[0], IOPRIO_WHO_PROCESS, 0, value) < 0:
        return f"I/O priority: {os.strerror(ctypes.get_errno())}"
    return None


def of_this_thread() -> ThreadPriority:
    """The calling thread's priorities (pid 0 names the calling thread on Linux)."""
    stat = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
    io = _io_priority()
    return ThreadPriority(
        policy=POLICIES.get(os.sched_getscheduler(0), "unknown"),
        nice=int(stat[16]),  # field 19 of proc_pid_stat(5), counted after "pid (comm)"
        io_class="unknown" if io is None else IO_CLASSES.get(io >> IOPRIO_CLASS_SHIFT, "unknown"),
    )


@dataclass(frozen=True)
class Lowered:
    """What `lower_this_thread` did: the priority the thread now has, what it could not do."""

    priority: ThreadPriority | None  # None: not lowered (not Linux)
    problems: tuple[str, ...] = ()

    def warning(self) -> str | None:
        if not self.problems:
            return None
        return (
            "could not lower the backup's priority fully (" + "; ".join(self.problems) + "): "
            "what could not be lowered runs at normal priority"
        )


def lower_this_thread() -> Lowered:
    """SCHED_IDLE, nice 19 and the idle I/O class for the calling thread and every thread it
    starts from now on; irreversible without privileges. Never fails: what the system refuses
    (a seccomp profile, another kernel) is said in `problems` and the work goes on as it is."""
    if not _linux():
        return Lowered(None)  # documented: Linux only
    problems: list[str] = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICE)  # who 0: this thread (Linux)
    except OSError as exc:
        problems.append(f"nice: {exc.strerror}")
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        problems.append(f"SCHED_IDLE: {exc.strerror}")
    if problem := _set_io_priority(IDLE_IO):
        problems.append(problem)
    return Lowered(of_this_thread(), tuple(problems))


@contextlib.contextmanager
def live_database_reads() -> Iterator[None]:
    """Around reads of the live database by a thread at the idle I/O class: best-effort level
    7 meanwhile (module docstring: Kotomi waits for the pages being read), the idle class
    again after. Threads started inside keep best-effort 7 (the check on the same read)."""
    before = _io_priority() if _linux() else None
    lowered = before is not None and before >> IOPRIO_CLASS_SHIFT == IOPRIO_CLASS_IDLE
    if lowered:
        _set_io_priority(LOWEST_BEST_EFFORT)
    try:
        yield
    finally:
        if lowered:
            _set_io_priority(IDLE_IO)


def _name_this_thread(name: str) -> None:
    if _linux():
        _libc().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def in_background(
    priority: Priority, work: Callable[..., R], /, *args: object, **kwargs: object
) -> R:
    """`work(*args, **kwargs)` at low priority in a thread of its own, which ends with it; the
    caller's thread keeps its priority (so a restore run later in the same process keeps
    normal priority). Its result is returned and what it raised is raised here. Context
    variables (a backup's deadline) are carried over. With `priority` normal, `work` runs
    here, as it is."""
    if priority == "normal":
        return work(*args, **kwargs)
    context = contextvars.copy_context()
    outcome: list[R] = []
    failure: list[BaseException] = []

    def run() -> None:
        _name_this_thread(BACKGROUND_THREAD)
        lower_this_thread()  # what it could not lower runs at normal priority, as before
        try:
            outcome.append(context.run(work, *args, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    # A daemon: if the caller is interrupted (a run terminated), the process may still end.
    worker = threading.Thread(target=run, name=BACKGROUND_THREAD, daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


# Threads -------------------------------------------------------------------------------------

MAX_COMPRESSION_THREADS = 2  # measured: more gains nothing at level 2 (docs/benchmarks.md)


def cgroup_cpu_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CPUs this process's cgroup may use (its quota over its period, the smallest along
    its path up to the root), or None when it has no limit. cgroup v2 (`cpu.max`) or v1
    (`cpu.cfs_quota_us`, `cpu.cfs_period_us`)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            for folder in _up_to(root, path):
                limits += _v2_limit(folder / "cpu.max")
        elif "cpu" in controllers.split(","):
            for mount in (root / "cpu", root / "cpu,cpuacct", root / controllers):
                for folder in _up_to(mount, path):
                    limits += _v1_limit(folder)
    return min(limits) if limits else None


def _up_to(root: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_limit(cpu_max: Path) -> list[float]:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    return [] if quota == "max" else [int(quota) / int(period)]


def _v1_limit(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [] if quota <= 0 or period <= 0 else [quota / period]


def usable_cpus(affinity: int | None = None, limit: float | None = None) -> int:
    """The cores this process may use: its CPU affinity, within its cgroup's CPU limit (a
    quota of 1.5 CPUs is 2: it can still run on two at once)."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = os.cpu_count() or 1
    if limit is None:
        limit = cgroup_cpu_limit()
    cores = affinity if limit is None else min(affinity, math.ceil(limit))
    return max(1, cores)


def compression_threads(cpus: int | None = None, lowered: bool | None = None) -> int:
    """zstd worker threads for a backup, at most MAX_COMPRESSION_THREADS; none on one core
    (zstd compresses in the calling thread). At normal priority one core is left to the
    database's own process. A SCHED_IDLE worker (`lowered`, default: the calling thread is)
    leaves its core to any thread that wakes on it, so it may use both: with one worker on 2
    cores a full backup took 1.04-1.27x the time on an idle machine (docs/benchmarks.md)."""
    cores = usable_cpus() if cpus is None else cpus
    if lowered is None:
        lowered = _linux() and os.sched_getscheduler(0) == os.SCHED_IDLE
    if cores <= 1:
        return 0
    return min(MAX_COMPRESSION_THREADS, cores if lowered else cores - 1)


# The read ceiling ----------------------------------------------------------------------------

MB = 1_000_000  # KOTOMI_BACKUP_READ_MBPS counts decimal megabytes, as disks and clouds do


class ReadCeiling:
    """At most `mb_per_second` MB read per second, on average; `burst` bytes may go at once.

    `take(n)` is called after n bytes were read (or before they are) and sleeps until the
    rate allows them: by any instant t after the first take, at most `burst + rate * t`
    bytes have been let through. Safe to share between threads. The clock and the sleep are
    injectable: the tests use a clock that only moves when something sleeps."""

    def __init__(
        self,
        mb_per_second: float,
        *,
        burst: int = 4 << 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not mb_per_second > 0:
            raise ValueError("a read ceiling must be a positive number of MB per second")
        self.rate = mb_per_second * MB  # bytes per second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last: float | None = None
        self.taken = 0  # bytes let through, in all

    def take(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            now = self._clock()
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= count
            self.taken += count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            # The debt stays in the bucket: the time slept refills it, for every thread.
            self._sleep(wait)

    def seconds_for(self, count: int) -> float:
        """How long `count` bytes take at this rate, at least."""
        return max(0.0, count - self.burst) / self.rate


def read_ceiling(mb_per_second: float | None) -> ReadCeiling | None:
    return ReadCeiling(mb_per_second) if mb_per_second else None
