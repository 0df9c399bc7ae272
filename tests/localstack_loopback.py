"""LocalStack's runtime (host mode, no Docker) with its network held to loopback.

tests/servers.py: localstack_s3() runs this file with LocalStack's own Python 3.13 virtualenv
(.venv-localstack, made by scripts/install-localstack.sh), never with the project's.

The machine reaches no network, and a test server sends nothing past 127.0.0.1. The environment
localstack_s3() sets turns off what LocalStack lets one turn off (analytics, the certificate
download, its DNS server, the container probes); what is left, such as start-up's lookup of
`s3.<LOCALSTACK_HOST>`, this guard refuses at once instead of letting it wait on a timeout: a
name that is not loopback does not resolve (no DNS query is sent), a connection or a datagram
to an address that is not loopback is refused, and no program is run (LocalStack pings Docker's
bridge address when it thinks it is in a container, and removes its scratch folder with `rm`:
localstack_s3() removes it). Each refusal is one line on stderr, `loopback guard: refused ...`,
in the server's log. And the server exits when its port is taken, and ends when the process that
started it is gone.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: Any) -> bool:
    if host is None:  # a listening socket's "any address" lookup: bound by the caller
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str) -> None:
    sys.stderr.write(f"loopback guard: refused {what}\n")
    sys.stderr.flush()


_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname
_gethostbyname_ex = socket.gethostbyname_ex
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_sendto = socket.socket.sendto
_bind = socket.socket.bind


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        _refuse(f"the lookup of {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host: str) -> str:
    if not _is_loopback(host):
        _refuse(f"the lookup of {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _gethostbyname(host)


def gethostbyname_ex(host: str) -> Any:
    if not _is_loopback(host):
        _refuse(f"the lookup of {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _gethostbyname_ex(host)


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse(f"a connection to {address!r}")
        raise ConnectionRefusedError(f"loopback guard: {address[0]} is not loopback")


def connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    _connect(self, address)


def connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _connect_ex(self, address)


def sendto(self: socket.socket, data: Any, *flags_and_address: Any) -> int:
    _check_address(self, flags_and_address[-1])  # a datagram (a DNS query) names its address
    return _sendto(self, data, *flags_and_address)


def refuse_to_run(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    _refuse(f"to run {args!r}")
    raise PermissionError(f"loopback guard: no program is run ({args!r})")


def exit_when_the_gateway_port_is_taken(port: int) -> None:
    """LocalStack carries on, "Ready.", when its gateway cannot listen: exit instead, so that
    localstack_s3() starts it again on another port (the port is picked free, then handed
    over, and another process can take it in between)."""

    def bind(self: socket.socket, address: Any) -> None:
        try:
            _bind(self, address)
        except OSError as failed:
            is_gateway = isinstance(address, tuple) and address[1] == port
            if is_gateway and failed.errno == errno.EADDRINUSE:
                sys.stderr.write(f"loopback guard: port {port} is taken, exiting\n")
                sys.stderr.flush()
                os._exit(98)
            raise

    socket.socket.bind = bind  # type: ignore[method-assign]


def end_with_the_test_process() -> None:
    """A test run killed outright (SIGKILL) runs no teardown: end the server's process group
    once the process that started it is gone, so no server outlives its tests."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="loopback-guard-watch", daemon=True).start()


def main() -> None:
    end_with_the_test_process()
    exit_when_the_gateway_port_is_taken(int(os.environ["GATEWAY_LISTEN"].rsplit(":", 1)[1]))
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign]
    subprocess.Popen._execute_child = refuse_to_run  # type: ignore[attr-defined]
    sys.argv = ["localstack"]
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
