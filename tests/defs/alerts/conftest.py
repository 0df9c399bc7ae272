"""Real receivers on loopback: an HTTP webhook receiver and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# Secrets the tests configure; none may appear in a message, a log line or the event log.
WEBHOOK_TOKEN = "T0K3N-webhook-8f1c2e9a7b"
SMTP_PASSWORD = "pw-Sm7p-9d3e1c55aa"
SLACK_TOKEN = "xoxb-slack-4c0ffee4c0ffee"
SMTP_USER = "alerts@example.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    port: int
    posts: list[Received] = field(default_factory=list)

    def url(self, path: str = f"/hooks/services/{WEBHOOK_TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}?token={WEBHOOK_TOKEN}"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode(errors="replace")}
            receiver.posts.append(Received(self.path, dict(self.headers), body))
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@dataclass
class SmtpServer:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [m.as_string() for m in self.messages]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1 with AUTH (allowed without TLS here: loopback only)."""
    server = SmtpServer(port=free_port())

    class Handler:
        async def handle_DATA(self, srv: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            server.messages.append(message)
            return "250 Message accepted"

    def authenticator(srv: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            server.logins.append((user, password))
            ok = user == SMTP_USER and password == SMTP_PASSWORD
            return AuthResult(success=ok, handled=ok)  # handled=False: the server sends 535
        return AuthResult(success=False, handled=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=server.port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield server
    controller.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: the "channel is down" case."""
    return free_port()


def alert_env(
    monkeypatch: pytest.MonkeyPatch,
    *,
    webhook_url: str | None,
    smtp_port: int | None,
    webserver: str = "http://dagster.example.test:3000",
) -> None:
    """The notifier's settings, through the documented environment variables."""
    monkeypatch.setenv("KOTOMI_BACKUP_WEBSERVER_URL", webserver)
    if webhook_url:
        monkeypatch.setenv("KOTOMI_BACKUP_ALERT_WEBHOOK_URL", webhook_url)
    if smtp_port:
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_PORT", str(smtp_port))
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_SECURITY", "none")
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_USER", SMTP_USER)
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_PASSWORD", SMTP_PASSWORD)
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_FROM", "kotomi-backup@example.test")
        monkeypatch.setenv("KOTOMI_BACKUP_SMTP_TO", "oncall@example.test, second@example.test")


def backup_env(monkeypatch: pytest.MonkeyPatch, db: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "backups"
    monkeypatch.setenv("KOTOMI_DB_PATH", str(db))
    monkeypatch.setenv("KOTOMI_BACKUP_URL", str(dest))
    monkeypatch.setenv("KOTOMI_BACKUP_STAGING_DIR", str(tmp_path / "staging"))
    return dest


def unreachable_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """KOTOMI_BACKUP_URL on S3 at a loopback port nobody listens on (a refused connection), with
    test credentials and nothing of the developer's AWS setup; returns the URL."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAKOTOMITESTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "kotomi-test-secret-unreachable")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    url = "s3://offsite-bucket/prod"
    monkeypatch.setenv("KOTOMI_BACKUP_URL", url)
    return url


def assert_no_secret(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in (WEBHOOK_TOKEN, SMTP_PASSWORD, SLACK_TOKEN, *secrets):
            assert secret not in text, f"secret {secret[:6]}… leaked into: {text[:300]}"
