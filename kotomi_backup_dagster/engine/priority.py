"""What a backup leaves to the database's own process: CPU and disk priority, threads, and an
optional ceiling on how fast the live database is read.

Backups, drills, the restore test, prune and verify run in the background: they can wait,
Kotomi's writers cannot. A restore is the emergency and keeps normal priority. Everything
here is per thread, because Linux keeps the nice value and the I/O priority per thread and a
new thread starts with its creator's: lowering the thread that does the work lowers every
thread it starts (zstd's workers, the check beside the archive, the hashers).

- **CPU: nice 19.** Within one scheduling group (a container's cgroup, a session's
  autogroup) a nice-19 thread weighs 15 against a normal thread's 1024. SCHED_IDLE (weight 3)
  measured no better for the writer (docs/benchmarks.md, "A backup Kotomi does not feel") and
  starves a backup outright on a host whose other services keep the CPU busy. Neither
  crosses groups: the kernel first shares the CPU between cgroups (Docker containers,
  systemd services with their own weight) and autogroups (sessions), whatever the nice
  values inside them, so the compose file gives the containers runs execute in a low CPU
  weight (`cpu_shares`).
- **Disk: the idle I/O class** (`ioprio_set`), served when no other request waits; BFQ and
  mq-deadline honour it (mq-deadline dispatches a waiting one after 10 s at the latest), `none`
  (most NVMe and virtual disks with their own queue) does not: a network volume is what
  `KOTOMI_BACKUP_READ_MBPS` is for. Buffered writes are written back by the kernel's flusher,
  not at the writer's I/O priority.
- **Never raised back.** An unprivileged thread cannot lower its nice value again, so the CLI
  lowers its main thread before a command's work (one process, one command), and the Dagster
  layer runs a step's work in a thread of its own (`in_background`): the step's thread, and
  whatever runs in it afterwards (a restore run in the same process), keep their priority.
- **Threads** (`compression_threads`): zstd's workers leave a core to the database's own
  process on a small host: none on one core (compression in the calling thread), one on
  two, two from three; the cores are those this process may run on (affinity) within its
  cgroup's CPU limit.
- **The read ceiling** (`ReadCeiling`): a token bucket in bytes per second, taken by the
  snapshot copy (engine/snapshot.py) and the in-place page read (engine/paged/liveread.py).

`KOTOMI_BACKUP_PRIORITY=normal` turns the priorities off (a host that runs nothing but
backups); threads and the ceiling do not depend on it. Only Linux is lowered; elsewhere the
calls do nothing and say so.
"""

from __future__ import annotations

import contextvars
import ctypes
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
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
IOPRIO_CLASS_IDLE = 3
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
PR_SET_NAME = 15

R = TypeVar("R")


@dataclass(frozen=True)
class ThreadPriority:
    """One thread's priorities, as the kernel holds them."""

    nice: int
    io_class: str  # none (the default: best-effort derived from nice), realtime, best-effort, idle
    io_level: int

    @property
    def lowered(self) -> bool:
        return self.nice >= BACKGROUND_NICE and self.io_class == "idle"

    def describe(self) -> str:
        io = (
            self.io_class
            if self.io_class in ("none", "idle")
            else f"{self.io_class} {self.io_level}"
        )
        return f"nice {self.nice}, I/O {io}"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _ioprio_calls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _IOPRIO_SYSCALLS.get(platform.machine().lower())


def io_priority(tid: int = 0) -> tuple[str, int] | None:
    """(class, level) of thread `tid` (0: the calling thread), or None where unknown."""
    calls = _ioprio_calls()
    if calls is None:
        return None
    value = _libc().syscall(calls[1], IOPRIO_WHO_PROCESS, tid)
    if value < 0:
        return None
    return IO_CLASSES.get(value >> IOPRIO_CLASS_SHIFT, "unknown"), value & 0x1FFF


def thread_nice(pid: int | None = None, tid: int | None = None) -> int:
    """The nice value of one thread (default: the calling one), from /proc: `os.nice(0)` and
    `getpriority` would name the whole process on other systems."""
    if pid is None and tid is None:
        stat = Path("/proc/thread-self/stat")
    else:
        stat = Path(f"/proc/{pid or os.getpid()}/task/{tid or pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat(5), counted after "pid (comm)"


def of_this_thread() -> ThreadPriority:
    io = io_priority() or ("unknown", 0)
    try:
        nice = thread_nice()
    except OSError:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    return ThreadPriority(nice=nice, io_class=io[0], io_level=io[1])


@dataclass(frozen=True)
class Lowered:
    """What `lower_this_thread` did: the priority the thread now has, and what it could not do."""

    priority: ThreadPriority | None  # None: not lowered (not Linux)
    problems: tuple[str, ...] = ()

    def warning(self) -> str | None:
        if not self.problems:
            return None
        return (
            "could not lower the backup's priority (" + "; ".join(self.problems) + "): it runs "
            "at normal priority, as with KOTOMI_BACKUP_PRIORITY=normal"
        )


def lower_this_thread() -> Lowered:
    """Nice 19 and the idle I/O class for the calling thread and every thread it starts from
    now on; irreversible without privileges. Never fails: what the system refuses (another
    kernel, a seccomp profile) is said in `problems` and the work goes on as it is."""
    if not sys.platform.startswith("linux"):
        return Lowered(None)  # documented: Linux only
    problems: list[str] = []
    tid = threading.get_native_id()
    try:
        # On Linux the nice value is the thread's (who = a thread id): setpriority(2), BUGS.
        os.setpriority(os.PRIO_PROCESS, tid, max(BACKGROUND_NICE, thread_nice()))
    except OSError as exc:
        problems.append(f"nice: {exc.strerror}")
    calls = _ioprio_calls()
    if calls is None:
        problems.append(f"I/O priority: unknown on {platform.machine()}")
    elif _libc().syscall(calls[0], IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << 13) < 0:
        problems.append(f"I/O priority: {os.strerror(ctypes.get_errno())}")
    return Lowered(of_this_thread(), tuple(problems))


def _name_this_thread(name: str) -> None:
    if sys.platform.startswith("linux"):
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


def compression_threads(cpus: int | None = None) -> int:
    """zstd worker threads for a backup: one core left for the database's own process (0 on
    one core: zstd compresses in the calling thread), at most MAX_COMPRESSION_THREADS."""
    cores = usable_cpus() if cpus is None else cpus
    return max(0, min(MAX_COMPRESSION_THREADS, cores - 1))


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
