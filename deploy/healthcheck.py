"""The image's HEALTHCHECK: probe the Dagster endpoint of whatever this container runs.

The process is PID 1's command line (or the command after an init such as docker-init):
`dagster-webserver` answers GET /server_info; a code server (`dagster code-server start`,
`dagster api grpc`) answers the gRPC health check that `dagster api grpc-health-check` sends,
asked here directly because importing dagster costs a second and a half of CPU per probe.
Ports and hosts come from the same flags and environment variables the process read.
Anything else (daemon, runs, the CLI) has no endpoint: healthy while it runs.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

TIMEOUT = 8.0


def command_line() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def option(args: list[str], short: str, long: str, env: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return os.environ.get(env) or default


def loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def probe_webserver(args: list[str]) -> None:
    host = loopback(option(args, "-h", "--host", "DAGSTER_WEBSERVER_HOST", "127.0.0.1"))
    port = option(args, "-p", "--port", "DAGSTER_WEBSERVER_PORT", "3000")
    prefix = option(args, "-l", "--path-prefix", "DAGSTER_WEBSERVER_PATH_PREFIX", "")
    url = f"http://{host}:{port}{prefix.rstrip('/')}/server_info"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}")


def probe_code_server(args: list[str]) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    host = loopback(option(args, "-h", "--host", "DAGSTER_CODE_SERVER_HOST", "127.0.0.1"))
    port = option(args, "-p", "--port", "DAGSTER_CODE_SERVER_PORT", "4000")
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="DagsterApi")
        status = stub.Check(request, timeout=TIMEOUT).status
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise SystemExit(f"code server on {host}:{port} is not serving (status {status})")


def main() -> None:
    args = command_line()
    names = [os.path.basename(a) for a in args]
    if "dagster-webserver" in names:
        probe_webserver(args[names.index("dagster-webserver") :])
    elif "code-server" in args or ("api" in args and "grpc" in args):
        probe_code_server(args)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as exc:  # any failure to get an answer is "unhealthy", said in one line
        sys.exit(f"unhealthy: {type(exc).__name__}: {exc}")
