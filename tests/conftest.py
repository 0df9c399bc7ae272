"""Shared fixtures: a clean environment, the real CLI, demo Kotomi databases, age keys, a live
writer, and real S3 and GCS servers on loopback (moto, gcp-storage-emulator) with buckets; for
the rules those two do not enforce (S3 Object Lock, GCS create-only writes), LocalStack's S3 and
fake-gcs-server (docs/test-servers.md)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import multiprocessing
import os
import platform
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi, generate_demo_database
from tests.servers import (
    Endpoint,
    FaultProxy,
    ServerUnavailable,
    fake_gcs,
    gcs_emulator,
    localstack_s3,
    moto_server,
)

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "kotomi_backup_dagster.cli"]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment minus the developer's KOTOMI_*, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("KOTOMI_")}
    full.update(env or {})
    return full


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The real `kotomi-backup`, run to its end, in `cli_env(env)`."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        preexec_fn=preexec_fn,
        check=False,
    )


def popen_cli(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    """The real `kotomi-backup` started in `cli_env(env)` and left running (to be killed or
    interrupted); `popen` goes to `subprocess.Popen` (stdout, stderr, preexec_fn...)."""
    return subprocess.Popen([*CLI, *args], env=cli_env(env), text=True, **popen)


def kill_cli_after(seconds: float, *args: str, env: dict[str, str] | None = None) -> None:
    """Start the real `kotomi-backup` and SIGKILL it `seconds` later, wherever it got to."""
    proc = popen_cli(*args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command writes (no traceback, nothing else)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("kotomi-backup:")
    return lines[0]


# Priorities (engine/priority.py), as the kernel holds them, and points where a command waits
# on the test (a locked database, an age identity the test has not written yet).

IO_CLASSES = {0: "none", 1: "realtime", 2: "best-effort", 3: "idle"}
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}  # syscall numbers (tests run on these)
POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle"}
LOWERED = ("idle", 19, "idle")  # SCHED_IDLE, nice 19, the idle I/O class


def observed_priority(pid: int | None = None, tid: int | None = None) -> tuple[str, int, str]:
    """(scheduling policy, nice, I/O class) of one thread as the kernel holds them:
    sched_getscheduler(tid), field 19 of /proc/<pid>/task/<tid>/stat and
    ioprio_get(IOPRIO_WHO_PROCESS, tid) (a best-effort class with its level: "best-effort/7").
    Default: the calling thread; `pid` alone: that process's main thread."""
    if pid is None and tid is None:
        pid, tid = os.getpid(), threading.get_native_id()
    pid = pid or os.getpid()
    tid = tid or pid
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    nice = int(stat.rsplit(")", 1)[1].split()[16])
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(IOPRIO_GET[platform.machine()], 1, tid)
    assert value >= 0, os.strerror(ctypes.get_errno())
    io = IO_CLASSES[value >> 13] + (f"/{value & 0x1FFF}" if value >> 13 == 2 else "")
    return POLICIES[os.sched_getscheduler(tid)], nice, io


def threads_of(pid: int) -> dict[int, str]:
    """Thread id -> name, of every thread of process `pid` now."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found[int(task.name)] = (task / "comm").read_text().strip()
    return found


def wait_until(what: str, ready: Callable[[], bool], ended: Callable[[], object]) -> None:
    """Poll for an event while what brings it runs (`ended()` is not None once it stopped).
    No deadline: a busy machine is slow, not wrong; a hang ends at pytest's timeout."""
    while not ready():
        assert ended() is None, f"it ended before {what}"
        time.sleep(0.02)


def snapshot_waiting(staging: Path) -> bool:
    """Whether a snapshot copy has begun under `staging` (its partial file is there)."""
    return staging.exists() and any(staging.rglob(".*.partial"))


@contextlib.contextmanager
def exclusively_locked(db: Path) -> Iterator[None]:
    """A rollback-journal database held under an exclusive lock: a snapshot waits for it."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()


class FifoIdentity:
    """An age identity file that is a FIFO: a command that loads it waits in open() until the
    test writes the key."""

    def __init__(self, path: Path, key: AgeKey) -> None:
        self.path = path
        self.key = key
        os.mkfifo(path, 0o600)

    def opened_by_reader(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return False
            raise
        self._fd = fd
        return True

    def hand_over(self) -> None:
        with os.fdopen(self._fd, "w") as fh:
            fh.write(self.key.identity_file.read_text())


def run_job(name: str, instance: Any = None, **execute: Any) -> Any:
    """Run one job of the code location the environment configures, in process, as the UI's
    Launch would; a failed run is returned, not raised."""
    from dagster import DagsterInstance

    from kotomi_backup_dagster.defs.factory import definitions_from_env

    job = definitions_from_env().resolve_job_def(name)
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(), raise_on_error=False, **execute
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's KOTOMI_* settings or writes to their cache."""
    for key in list(os.environ):
        if key.startswith("KOTOMI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def demo_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "kotomi.db"
    generate_demo_database(path, size_bytes=2_000_000, seed=7)
    return path


@pytest.fixture
def kotomi_db(demo_db_template: Path, tmp_path: Path) -> Path:
    """A private copy of a ~2 MB demo Kotomi database, in WAL mode."""
    path = tmp_path / "data" / "kotomi.db"
    path.parent.mkdir()
    shutil.copyfile(demo_db_template, path)
    return path


def kotomi_requests(db: Path, count: int, seed: int = 1) -> None:
    """`count` Kotomi-like requests (comment posts, reaction toggles), each committed."""
    conn = connect_like_kotomi(db)
    try:
        writer = KotomiWriter(conn, random.Random(seed))
        for _ in range(count):
            writer.request()
    finally:
        conn.close()


@dataclass
class AgeKey:
    identity_file: Path
    recipient: str


@pytest.fixture
def age_key(tmp_path: Path) -> AgeKey:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "age-key.txt"
    path.write_text(f"# test key\n{identity}\n")
    path.chmod(0o600)
    return AgeKey(identity_file=path, recipient=str(identity.to_public()))


def _write_at_rate(path: str, rate: float, log: str, stop: Any) -> None:
    """Child process: Kotomi-like requests at `rate`/s; logs each committed comment id."""
    conn = connect_like_kotomi(Path(path))
    writer = KotomiWriter(conn)
    interval = 1.0 / rate
    next_at = time.monotonic()
    requests = 0
    with open(log, "a", buffering=1) as out:
        while not stop.is_set():
            started = time.monotonic()
            comment_id = writer.request()
            done = time.monotonic()
            requests += 1
            out.write(f"{done:.6f} {done - started:.6f} {comment_id or '-'}\n")
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    conn.close()


@dataclass
class LiveWriter:
    """A separate process committing Kotomi-like requests at a fixed rate, like a live Kotomi.

    Every committed request is logged with its commit time (CLOCK_MONOTONIC, shared by all
    processes), so a test can tell which comments were committed before a snapshot began.
    """

    path: Path
    rate: float
    log: Path

    def entries(self) -> list[tuple[float, float, str]]:
        rows = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), float(parts[1]), parts[2]))
        return rows

    @property
    def requests(self) -> int:
        return len(self.entries())

    def committed_before(self, moment: float) -> list[str]:
        return [cid for at, _, cid in self.entries() if at < moment and cid != "-"]


@pytest.fixture
def live_writer(kotomi_db: Path, tmp_path: Path) -> Iterator[LiveWriter]:
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    writer = LiveWriter(path=kotomi_db, rate=500.0, log=tmp_path / "writer.log")
    writer.log.touch()
    proc = ctx.Process(target=_write_at_rate, args=(str(kotomi_db), 500.0, str(writer.log), stop))
    proc.start()
    time.sleep(0.3)
    yield writer
    stop.set()
    proc.join(timeout=10)
    assert proc.exitcode == 0, f"writer process failed (exit {proc.exitcode})"


def comment_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM comments")}
    finally:
        conn.close()


def corrupt_table(db: Path, table: str = "comments") -> None:
    """Checkpoint the WAL, then break the root page of `table` in the main file."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)
        ).fetchone()
    finally:
        conn.close()
    flip_page_header(db, root[0], page_size)


@pytest.fixture
def dagster_env(monkeypatch: pytest.MonkeyPatch, kotomi_db: Path, tmp_path: Path) -> Path:
    """The environment a Dagster run reads (EnvVar): the demo database, a local destination
    (returned), private staging, and no upload step retries (failures in tests are meant)."""
    dest = tmp_path / "backups"
    monkeypatch.setenv("KOTOMI_DB_PATH", str(kotomi_db))
    monkeypatch.setenv("KOTOMI_BACKUP_URL", str(dest))
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRIES", "0")
    return dest


def flip_page_header(db: Path, page_number: int, page_size: int) -> None:
    """Overwrite the b-tree header of one page: SQLite's checks must notice."""
    with db.open("r+b") as fh:
        fh.seek((page_number - 1) * page_size)
        fh.write(b"\xff" * 12)


@dataclass
class FullDisk:
    """A folder where writes find no room after `size` bytes: a real tmpfs of that size when
    this machine lets the tests mount one (root), else any folder with the file-size limit
    (RLIMIT_FSIZE, EFBIG) applied by `limits()` in-process or `preexec` in a child."""

    path: Path
    size: int
    mounted: bool

    @contextlib.contextmanager
    def limits(self) -> Iterator[None]:
        if self.mounted:
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old)

    def preexec(self) -> None:
        if not self.mounted:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, resource.RLIM_INFINITY))


SmallDisk = Callable[..., FullDisk]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """`small_disk(kib=N)`: a new `FullDisk` of N KiB."""
    mounts: list[Path] = []

    def make(kib: int) -> FullDisk:
        path = tmp_path / f"small-disk-{len(mounts)}"
        path.mkdir()
        if os.environ.get("TEST_FULL_DISK") == "rlimit":  # try the fallback where root mounts
            return FullDisk(path=path, size=kib * 1024, mounted=False)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            mounts.append(path)
        return FullDisk(path=path, size=kib * 1024, mounted=done.returncode == 0)

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- Real S3 and GCS servers on loopback, started once per session -------------------------

# Distinctive, so a test can prove it never shows up in a message.
AWS_SECRET = "kotomi-test-secret-WJALRXUTNFEMI"
AWS_KEY_ID = "AKIAKOTOMITESTKEY01"


@pytest.fixture(scope="session")
def moto() -> Iterator[Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Endpoint]:
    with gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def localstack() -> Iterator[Endpoint]:
    """LocalStack's S3 (Object Lock enforced as S3 does), started at the first test that asks;
    the test skips where LocalStack is not installed (scripts/install-localstack.sh)."""
    try:
        with localstack_s3() as endpoint:
            yield endpoint
    except ServerUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[Endpoint]:
    """fake-gcs-server (create-only writes enforced, retention stored but not enforced)."""
    with fake_gcs() as endpoint:
        yield endpoint


def point_aws_at(monkeypatch: pytest.MonkeyPatch, server: Endpoint, tmp_path: Path) -> Endpoint:
    """boto3's standard chain sees test credentials and the server's endpoint, nothing else."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    return server


def point_gcs_at(monkeypatch: pytest.MonkeyPatch, server: Endpoint) -> Endpoint:
    """google-cloud-storage talks to the server, anonymously (STORAGE_EMULATOR_HOST)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    return server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto: Endpoint, tmp_path: Path) -> Endpoint:
    return point_aws_at(monkeypatch, moto, tmp_path)


@pytest.fixture
def localstack_env(
    monkeypatch: pytest.MonkeyPatch, localstack: Endpoint, tmp_path: Path
) -> Endpoint:
    """As aws_env, with LocalStack's S3 in place of moto."""
    return point_aws_at(monkeypatch, localstack, tmp_path)


@pytest.fixture
def gcs_env(monkeypatch: pytest.MonkeyPatch, gcs_server: Endpoint) -> Endpoint:
    return point_gcs_at(monkeypatch, gcs_server)


@pytest.fixture
def fake_gcs_env(monkeypatch: pytest.MonkeyPatch, fake_gcs_server: Endpoint) -> Endpoint:
    """As gcs_env, with fake-gcs-server in place of gcp-storage-emulator."""
    return point_gcs_at(monkeypatch, fake_gcs_server)


def unique_bucket() -> str:
    return f"kotomi-{uuid.uuid4().hex[:12]}"


def s3_client(endpoint_url: str) -> Any:
    """A boto3 client for setting up and inspecting, with botocore retries off."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1})
    )


@pytest.fixture
def s3_bucket(aws_env: Endpoint) -> str:
    name = unique_bucket()
    s3_client(aws_env.url).create_bucket(Bucket=name)
    return name


def gcs_client() -> Any:
    """The provider's own client, for setting up and inspecting. Its background GETs of
    bucket metadata (google-cloud-storage 3.x, for tracing labels) are off, as in our store:
    one landing late behind a fault proxy was counted as a request of the code under test."""
    from google.cloud import storage

    client = storage.Client()
    client._bucket_metadata_cache = None
    return client


@pytest.fixture
def gs_bucket(gcs_env: Endpoint) -> str:
    name = unique_bucket()
    gcs_client().create_bucket(name)
    return name


@pytest.fixture
def proxy_for() -> Iterator[Proxies]:
    """`proxy_for(endpoint)`: a fault proxy in front of a server, closed after the test."""
    made: list[FaultProxy] = []

    def make(endpoint: Endpoint, **knobs: Any) -> FaultProxy:
        proxy = FaultProxy(endpoint.port, **knobs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


Proxies = Callable[..., FaultProxy]
