"""engine/priority.py: what a backup leaves to Kotomi (lowered threads, fitted zstd threads, the
read ceiling), observed from the kernel's side: /proc and ioprio_get."""

from __future__ import annotations

import contextvars
import math
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine import priority
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.paged import HashCache, recipients_fingerprint
from kotomi_backup_dagster.engine.paged.liveread import LiveReadRequest, read_live
from kotomi_backup_dagster.engine.priority import ReadCeiling, compression_threads, in_background
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.snapshot import CEILING_STEP, take_snapshot
from kotomi_backup_dagster.engine.stores import open_store, safe_url
from tests.conftest import LOWERED, LiveWriter, observed_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")


def in_new_thread(work):  # type: ignore[no-untyped-def]
    """Run `work` in a thread of its own (the test's thread must never be lowered)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def test_a_lowered_thread_and_the_threads_it_starts_are_nice_19_and_idle_io() -> None:
    def work() -> tuple[tuple[str, int, str], tuple[str, int, str]]:
        priority.lower_this_thread()
        seen: list[tuple[str, int, str]] = []
        child = threading.Thread(target=lambda: seen.append(observed_priority()))
        child.start()
        child.join()
        return observed_priority(), seen[0]

    before = observed_priority()
    lowered, started_after = in_new_thread(work)
    assert lowered == LOWERED
    assert started_after == LOWERED  # zstd's workers, the check, the hashers inherit it
    assert observed_priority() == before  # per thread: the caller is as it was


def test_in_background_runs_the_work_lowered_and_hands_back_result_and_errors() -> None:
    deadline = contextvars.ContextVar("deadline", default=0)
    deadline.set(42)
    caller = observed_priority()

    def work(x: int) -> tuple[int, tuple[str, int, str], str, int]:
        name = Path("/proc/thread-self/comm").read_text().strip()
        return x + 1, observed_priority(), name, deadline.get()

    result, seen, name, carried = in_background("low", work, 1)
    assert (result, seen, name, carried) == (2, LOWERED, priority.BACKGROUND_THREAD, 42)
    assert observed_priority() == caller  # a restore run next in this thread keeps its priority

    def fails() -> None:
        raise ValueError("the work's own error")

    with pytest.raises(ValueError, match="the work's own error"):
        in_background("low", fails)


def test_reads_of_the_live_database_are_best_effort_7_and_idle_again_after() -> None:
    """Kotomi waits for a page being read: such a read must never wait in the idle class."""

    def work() -> tuple[str, str, str, str]:
        priority.lower_this_thread()
        with priority.live_database_reads():
            reading = observed_priority()[2]
            seen: list[str] = []
            check = threading.Thread(target=lambda: seen.append(observed_priority()[2]))
            check.start()
            check.join()
        return reading, seen[0], observed_priority()[2], observed_priority()[0]

    assert in_new_thread(work) == ("best-effort/7", "best-effort/7", "idle", "idle")
    normal = observed_priority()
    with priority.live_database_reads():  # a thread not lowered is left as it is
        assert observed_priority() == normal


def test_priority_normal_runs_the_work_in_the_callers_thread_as_it_is() -> None:
    caller = threading.get_native_id()
    assert in_background("normal", threading.get_native_id) == caller
    assert in_background("normal", observed_priority) == observed_priority()


# Threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "normal", "lowered"), [(1, 0, 0), (2, 1, 2), (3, 2, 2), (4, 2, 2), (64, 2, 2)]
)
def test_zstd_leaves_a_core_to_the_database_unless_its_workers_yield_it(
    cores: int, normal: int, lowered: bool
) -> None:
    assert compression_threads(cores, lowered=False) == normal
    assert compression_threads(cores, lowered=True) == lowered


def test_the_calling_threads_policy_decides_which() -> None:
    assert compression_threads(2) == 1  # this thread: normal priority

    def lowered() -> int:
        priority.lower_this_thread()
        return compression_threads(2)

    assert in_new_thread(lowered) == 2


def test_the_cores_are_this_process_affinity() -> None:
    """A child pinned to some of this machine's cores fits its threads to them."""
    mine = sorted(__import__("os").sched_getaffinity(0))
    for count in sorted({1, min(2, len(mine))}):
        code = (
            "import os; from kotomi_backup_dagster.engine import priority as p; "
            f"os.sched_setaffinity(0, {set(mine[:count])!r}); "
            "print(p.usable_cpus(limit=64.0), p.compression_threads())"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.split() == [str(count), str(count - 1)], out.stderr


def write_cgroup(root: Path, path: str, files: dict[str, str]) -> None:
    folder = root / path.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_cgroup_v2_quota_anywhere_up_the_path_limits_the_cores(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/kotomi-backup.service\n")
    root = tmp_path / "fs"
    write_cgroup(root, "system.slice/kotomi-backup.service", {"cpu.max": "max 100000\n"})
    write_cgroup(root, "system.slice", {"cpu.max": "150000 100000\n"})
    assert priority.cgroup_cpu_limit(proc, root) == 1.5
    assert priority.usable_cpus(affinity=8, limit=1.5) == 2
    assert compression_threads(priority.usable_cpus(affinity=8, limit=1.5), lowered=False) == 1
    write_cgroup(root, "system.slice", {"cpu.max": "max 100000\n"})
    assert priority.cgroup_cpu_limit(proc, root) is None


def test_a_cgroup_v1_quota_limits_the_cores_and_minus_one_is_none(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    root = tmp_path / "fs"
    files = {"cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"}
    write_cgroup(root / "cpu,cpuacct", "docker/abc", files)
    assert priority.cgroup_cpu_limit(proc, root) == 0.5
    assert priority.usable_cpus(affinity=2, limit=0.5) == 1
    write_cgroup(root / "cpu,cpuacct", "docker/abc", {"cpu.cfs_quota_us": "-1\n"})
    assert priority.cgroup_cpu_limit(proc, root) is None


# The read ceiling ---------------------------------------------------------------------------


class VirtualClock:
    """Time that moves only when something sleeps; every take is recorded with its instant."""

    def __init__(self, real_pause: float = 0.0) -> None:
        self.now = 0.0
        self.real_pause = real_pause  # a real sleep too, so that a writer gets between steps

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.real_pause:
            threading.Event().wait(self.real_pause)


def ceiling_on(clock: VirtualClock, mb: float, burst: int = 1 << 20) -> ReadCeiling:
    return ReadCeiling(mb, burst=burst, clock=clock.time, sleep=clock.sleep)


def test_the_ceiling_lets_through_no_more_than_its_rate_plus_burst_at_any_instant() -> None:
    clock = VirtualClock()
    ceiling = ceiling_on(clock, 2.0, burst=256 << 10)  # 2 MB/s
    rng = random.Random(27)
    let_through = 0
    for _ in range(2000):
        # What was let through before this take is all the reader may have read by now.
        assert let_through <= ceiling.burst + ceiling.rate * clock.now + 1e-6
        n = rng.choice([4096, 65536, 1 << 20, rng.randrange(1, 300_000)])
        ceiling.take(n)
        let_through += n
        if rng.random() < 0.1:
            clock.now += rng.random() * 0.2  # the reader is busy elsewhere: no credit beyond burst
    assert ceiling.taken == let_through
    # And it is no slower than the rate needs: the clock moved by about what the bytes cost.
    assert clock.now >= ceiling.seconds_for(let_through)


def test_idle_time_earns_at_most_the_burst() -> None:
    clock = VirtualClock()
    ceiling = ceiling_on(clock, 1.0, burst=100_000)
    ceiling.take(50_000)
    clock.now += 3600.0  # an hour of nothing
    ceiling.take(100_000)
    slept_before = clock.now
    ceiling.take(1_000_000)  # a megabyte more must wait for a second at 1 MB/s
    assert clock.now - slept_before == pytest.approx(1.0)


def test_a_ceiling_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReadCeiling(0)


def page_count(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        return (
            int(conn.execute("PRAGMA page_count").fetchone()[0]),
            int(conn.execute("PRAGMA page_size").fetchone()[0]),
        )
    finally:
        conn.close()


def test_the_snapshot_copy_reads_the_whole_database_through_the_ceiling_while_kotomi_writes(
    live_writer: LiveWriter, tmp_path: Path
) -> None:
    """Stepped under the ceiling, in one held read transaction: every step but the last waits
    for the ceiling, no step restarts however much the writer commits between them, and the
    copy is one consistent snapshot."""
    clock = VirtualClock(real_pause=0.002)
    ceiling = ceiling_on(clock, 4.0, burst=CEILING_STEP)
    before = set(live_writer.committed_before(__import__("time").monotonic()))
    commits = live_writer.requests
    snap = take_snapshot(live_writer.path, tmp_path / "snap.db", ceiling=ceiling)
    assert live_writer.requests > commits  # the premise: the writer committed meanwhile
    size = snap.page_count * snap.page_size
    assert size - CEILING_STEP <= ceiling.taken <= size
    assert snap.steps == math.ceil(snap.page_count / (CEILING_STEP // snap.page_size))
    assert clock.now >= ceiling.seconds_for(ceiling.taken)
    conn = sqlite3.connect(snap.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in conn.execute("SELECT id FROM comments")}
    finally:
        conn.close()
    assert before <= ids


def test_a_rollback_journal_database_is_copied_in_one_step_whatever_the_ceiling(
    kotomi_db: Path, tmp_path: Path
) -> None:
    """Its read lock would hold Kotomi's writers back for the whole slow copy."""
    conn = sqlite3.connect(kotomi_db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    ceiling = ceiling_on(VirtualClock(), 0.001)
    snap = take_snapshot(kotomi_db, tmp_path / "snap.db", ceiling=ceiling)
    assert (snap.steps, ceiling.taken) == (1, 0)


def test_the_read_in_place_reads_every_page_through_the_ceiling(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    settings = BackupSettings.from_env(
        db_path=kotomi_db, urls=(str(store),), backup_format="paged", staging_dir=tmp_path / "s"
    )
    run_backup(settings)  # the base the read in place builds on
    cache = HashCache(settings.page_hash_cache)
    bases = cache.bases_for([safe_url(open_store(str(store)).url)], recipients_fingerprint(None))
    assert bases
    clock = VirtualClock()
    ceiling = ceiling_on(clock, 1.0, burst=64 << 10)
    workdir = tmp_path / "work"
    workdir.mkdir()
    read = read_live(
        LiveReadRequest(
            db_path=kotomi_db,
            workdir=workdir,
            backup_id="20260101T000000Z-000000",
            cache=cache,
            bases=bases,
            hashes_out=workdir / "hashes",
            profile="kotomi",
            busy_timeout=5.0,
            ceiling=ceiling,
        )
    )
    pages, size = page_count(kotomi_db)
    assert read.report.ok and read.hashes.page_count == pages
    assert ceiling.taken == pages * size
    assert clock.now >= ceiling.seconds_for(ceiling.taken)
