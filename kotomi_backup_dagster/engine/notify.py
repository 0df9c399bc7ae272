"""Alert messages and the channels that deliver them: a JSON webhook and email over SMTP.

Plain Python (urllib, smtplib): no Dagster import, so the CLI and cron jobs can alert too.
The Dagster layer adds Slack (dagster-slack's ``SlackResource``) as one more `Channel`.

What every alert says (`Alert`): the database, what failed (a stage or a check), the error's
first line, the run's URL in the Dagster UI when there is a run, the destination when one is
concerned, and what to do next. A "recovered" alert says what is fine again.

Webhook payload (one ``POST``, ``Content-Type: application/json``, any 2xx is success)::

    {
      "text":    "<title>\\n<body>",       # read by Slack and Mattermost incoming webhooks
      "content": "<same, cut to 2000 chars>",  # read by Discord webhooks
      "alert": {                          # for anything else (Alertmanager-style receivers)
        "source": "kotomi-backup",
        "status": "firing" | "recovered",
        "kind": "run_failure" | "stale" | "drill_overdue" | "drill_failed" | "size_drop"
                | "unlistable" | "backup_damaged" | "test",
        "database": "kotomi",
        "what": "upload stage",           # the failed stage or check
        "error": "first line of the error",  # when recovered: what is fine now
        "destination": "s3://bucket/prefix" | null,   # credentials removed
        "run_url": "http://127.0.0.1:3000/runs/<run_id>" | null,
        "next_step": "what to do next",
        "details": {"job": "kotomi_backup", ...},     # strings only
        "at": "2026-11-27T02:00:05Z"
      }
    }

Secrets: a channel's label (used in log lines) never holds a password, a token or a webhook
URL's path or query; every delivered text passes through `redact` with the configured secrets,
and channel errors are reduced to one redacted line.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, Protocol
from urllib.parse import urlsplit

from .. import __version__
from . import config
from .config import DEFAULT_SMTP_PORTS
from .destinations import what_to_check
from .errors import ConfigError, first_line
from .redaction import redact

Status = Literal["firing", "recovered"]
SmtpSecurity = Literal["starttls", "ssl", "none"]
DISCORD_LIMIT = 2000


def destination_advice(error: str) -> str | None:
    """The first thing to check for a destination's error, as a sentence of an alert (the
    causes: `destinations.what_to_check`); None when it says no cause."""
    check = what_to_check(error)
    return check[0].upper() + check[1:] if check else None


def url_label(url: str) -> str:
    """``scheme://host[:port]``: what a log line may say about a webhook URL."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or '?'}://{host}"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Alert:
    """One message for the person on call."""

    database: str
    what: str  # the failed stage or check: "upload stage", "stale backup"
    error: str  # the error's first line; for a recovery, what is fine now
    next_step: str
    kind: str = "run_failure"
    status: Status = "firing"
    run_url: str | None = None
    destination: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    at: datetime = field(default_factory=_now)

    @property
    def title(self) -> str:
        word = "RECOVERED" if self.status == "recovered" else "FAILED"
        return f"[kotomi-backup] {word} {self.database}: {self.what}"

    def body(self) -> str:
        lines = [f"Database: {self.database}", f"What: {self.what}"]
        lines.append(f"{'Now' if self.status == 'recovered' else 'Error'}: {self.error}")
        if self.destination:
            lines.append(f"Destination: {self.destination}")
        if self.run_url:
            lines.append(f"Run: {self.run_url}")
        lines.append(f"Next: {self.next_step}")
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        lines.append(f"At: {self.at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
        return "\n".join(lines)

    def text(self) -> str:
        return f"{self.title}\n{self.body()}"

    def payload(self) -> dict[str, object]:
        text = self.text()
        content = text if len(text) <= DISCORD_LIMIT else text[: DISCORD_LIMIT - 1] + "…"
        return {
            "text": text,
            "content": content,
            "alert": {
                "source": "kotomi-backup",
                "status": self.status,
                "kind": self.kind,
                "database": self.database,
                "what": self.what,
                "error": self.error,
                "destination": self.destination,
                "run_url": self.run_url,
                "next_step": self.next_step,
                "details": dict(self.details),
                "at": f"{self.at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
            },
        }

    def redacted(self, secrets: Sequence[str]) -> Alert:
        """The same alert with every secret removed from every text field."""

        def clean(value: str) -> str:
            return redact(value, secrets)

        return Alert(
            database=clean(self.database),
            what=clean(self.what),
            error=clean(self.error),
            next_step=clean(self.next_step),
            kind=self.kind,
            status=self.status,
            run_url=clean(self.run_url) if self.run_url else None,
            destination=clean(self.destination) if self.destination else None,
            details={clean(k): clean(v) for k, v in self.details.items()},
            at=self.at,
        )


class NotifyError(Exception):
    """A channel could not deliver; the message is one line without secrets."""


class Channel(Protocol):
    @property
    def label(self) -> str:
        """What log lines call this channel; never holds a secret."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver or raise (any exception; `send_alert` reduces it to one safe line)."""
        ...


class LogSink(Protocol):
    def info(self, msg: str, /) -> object: ...

    def warning(self, msg: str, /) -> object: ...


@dataclass(frozen=True)
class WebhookChannel:
    """POST the JSON payload above to an incoming-webhook URL."""

    url: str
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(
                f"KOTOMI_BACKUP_ALERT_WEBHOOK_URL must be an http(s) URL, not {url_label(self.url)}"
            )

    @property
    def label(self) -> str:
        return f"webhook {url_label(self.url)}"

    def send(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alert.payload()).encode(),
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"kotomi-backup/{__version__}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise NotifyError(_reason(exc.reason)) from None
        except TimeoutError:
            raise NotifyError(f"no answer within {self.timeout:g} s") from None


@dataclass(frozen=True)
class SmtpChannel:
    """One plain-text email per alert; STARTTLS, implicit TLS (ssl) or none; optional login."""

    host: str
    recipients: tuple[str, ...]
    sender: str
    port: int | None = None
    security: SmtpSecurity = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "security", config.SMTP_SECURITY.check(self.security))
        if not self.recipients:
            raise ConfigError("KOTOMI_BACKUP_SMTP_TO is empty: set one or more addresses")
        if not self.sender:
            raise ConfigError("KOTOMI_BACKUP_SMTP_FROM is empty: set the sender address")

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_SMTP_PORTS[self.security]

    @property
    def label(self) -> str:
        return f"email via {self.host}:{self.effective_port} ({self.security})"

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = alert.title
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(alert.at.timestamp(), usegmt=True)
        msg["Message-ID"] = make_msgid(domain="kotomi-backup.invalid")
        msg["X-Kotomi-Backup-Status"] = alert.status
        msg.set_content(alert.body() + "\n")
        return msg

    def send(self, alert: Alert) -> None:
        context = ssl.create_default_context()
        try:
            client: smtplib.SMTP
            if self.security == "ssl":
                client = smtplib.SMTP_SSL(
                    self.host, self.effective_port, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(self.host, self.effective_port, timeout=self.timeout)
            with client:
                client.ehlo()
                if self.security == "starttls":
                    client.starttls(context=context)
                    client.ehlo()
                if self.user:
                    client.login(self.user, self.password or "")
                client.send_message(self.message(alert))
        except smtplib.SMTPNotSupportedError:
            raise NotifyError(
                "the server offers no STARTTLS (or no AUTH); "
                "check KOTOMI_BACKUP_SMTP_SECURITY/_PORT"
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"login refused ({exc.smtp_code}); check KOTOMI_BACKUP_SMTP_USER/_PASSWORD"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifyError(f"recipients refused: {', '.join(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(
                f"server answered {exc.smtp_code} {_decode(exc.smtp_error)}"
            ) from None
        except ssl.SSLError as exc:
            raise NotifyError(f"TLS failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise NotifyError(f"no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise NotifyError(_reason(exc)) from None


def _decode(raw: bytes | str) -> str:
    return first_line(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return first_line(str(reason)) or type(reason).__name__


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert: the channels that took it and those that failed."""

    sent: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # "label: reason", already redacted

    @property
    def delivered(self) -> bool:
        """True when someone will read it (at least one channel took it)."""
        return bool(self.sent)

    @property
    def no_channel(self) -> bool:
        return not self.sent and not self.failed


def send_alert(
    alert: Alert,
    channels: Sequence[Channel],
    *,
    secrets: Sequence[str] = (),
    log: LogSink | None = None,
) -> Delivery:
    """Deliver on every channel; a failing channel is logged in one line and never stops
    the others. Secrets are removed from the alert before any channel sees it."""
    clean = alert.redacted(secrets)
    sent: list[str] = []
    failed: list[str] = []
    for channel in channels:
        try:
            channel.send(clean)
        except Exception as exc:
            reason = redact(first_line(str(exc)) or type(exc).__name__, secrets)
            line = f"{channel.label}: {reason}"
            failed.append(line)
            if log is not None:
                log.warning(f"alert not delivered by {line}")
        else:
            sent.append(channel.label)
    if log is not None:
        if sent:
            log.info(f"alert {clean.title!r} sent by {', '.join(sent)}")
        elif not failed:
            log.warning(f"no alert channel configured; alert was: {clean.title}")
    return Delivery(sent=tuple(sent), failed=tuple(failed))
