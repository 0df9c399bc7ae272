"""The alert notifier: one resource, several channels (webhook, email, Slack), from the env.

Environment (each read through `EnvVar` when set, so the UI shows names, never values):

    KOTOMI_BACKUP_WEBSERVER_URL      the Dagster UI, for run links (default http://127.0.0.1:3000)
    KOTOMI_BACKUP_ALERT_WEBHOOK_URL  JSON webhook (Slack, Mattermost, Discord or any receiver)
    KOTOMI_BACKUP_SMTP_HOST          email: set to enable, with _TO (and usually _FROM)
    KOTOMI_BACKUP_SMTP_PORT          default 587 (starttls), 465 (ssl), 25 (none)
    KOTOMI_BACKUP_SMTP_SECURITY      starttls (default), ssl or none
    KOTOMI_BACKUP_SMTP_USER / _PASSWORD   optional login
    KOTOMI_BACKUP_SMTP_FROM / _TO    sender; recipients (comma-separated)
    KOTOMI_BACKUP_SLACK_TOKEN / _CHANNEL  Slack bot token and channel, via dagster-slack
"""

import os
import socket
from typing import Any

from dagster import ConfigurableResource, EnvVar
from dagster_slack import SlackResource
from pydantic import Field

from ...engine.errors import ConfigError
from ...engine.notify import (
    Alert,
    Channel,
    Delivery,
    LogSink,
    NotifyError,
    SmtpChannel,
    WebhookChannel,
    send_alert,
)
from ...engine.redaction import url_secrets

NOTIFIER_KEY = "alert_notifier"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"


class SlackChannel:
    """Post the alert's text to a Slack channel through dagster-slack's `SlackResource`."""

    def __init__(self, slack: SlackResource, channel: str) -> None:
        self.slack = slack
        self.channel = channel

    @property
    def label(self) -> str:
        return f"slack {self.channel}"

    def send(self, alert: Alert) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            self.slack.get_client().chat_postMessage(channel=self.channel, text=alert.text())
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            raise NotifyError(f"Slack API error: {error or 'unknown'}") from None


class _Misconfigured:
    """A channel whose settings are incomplete: every send fails with what to fix."""

    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.reason = reason

    def send(self, alert: Alert) -> None:
        raise NotifyError(self.reason)


class AlertNotifier(ConfigurableResource):  # type: ignore[type-arg]
    """Sends alerts on every configured channel; one failing channel never hides the others."""

    webserver_base_url: str = Field(
        default=DEFAULT_WEBSERVER_URL,
        description="The Dagster UI's base URL, for run links (KOTOMI_BACKUP_WEBSERVER_URL).",
    )
    webhook_url: str | None = Field(
        default=None, description="JSON webhook URL (KOTOMI_BACKUP_ALERT_WEBHOOK_URL). Secret."
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server (KOTOMI_BACKUP_SMTP_HOST)."
    )
    smtp_port: int | None = Field(default=None, description="Default 587/465/25 by security.")
    smtp_security: str = Field(default="starttls", description="starttls, ssl or none.")
    smtp_user: str | None = Field(default=None, description="SMTP login (optional).")
    smtp_password: str | None = Field(default=None, description="SMTP password. Secret.")
    smtp_from: str | None = Field(default=None, description="Sender address.")
    smtp_to: str | None = Field(default=None, description="Recipients, comma-separated.")
    slack_token: str | None = Field(
        default=None, description="Slack bot token (KOTOMI_BACKUP_SLACK_TOKEN). Secret."
    )
    slack_channel: str | None = Field(default=None, description="Slack channel, e.g. #ops.")
    timeout_seconds: float = Field(default=10.0, description="Per channel and message.")

    def run_url(self, run_id: str) -> str:
        return f"{self.webserver_base_url.rstrip('/')}/runs/{run_id}"

    def secrets(self) -> list[str]:
        """Every configured value that must never appear in a message or log line."""
        found = url_secrets(self.webhook_url)
        found += [s for s in (self.smtp_password, self.slack_token) if s]
        return found

    def channels(self) -> list[Channel]:
        channels: list[Channel] = []
        if self.webhook_url:
            try:
                channels.append(WebhookChannel(self.webhook_url, timeout=self.timeout_seconds))
            except ConfigError as exc:
                channels.append(_Misconfigured("webhook", str(exc)))
        if self.smtp_host:
            channels.append(self._smtp())
        if self.slack_token or self.slack_channel:
            if self.slack_token and self.slack_channel:
                channels.append(
                    SlackChannel(SlackResource(token=self.slack_token), self.slack_channel)
                )
            else:
                channels.append(
                    _Misconfigured(
                        "slack",
                        "set both KOTOMI_BACKUP_SLACK_TOKEN and KOTOMI_BACKUP_SLACK_CHANNEL",
                    )
                )
        return channels

    def _smtp(self) -> Channel:
        host = self.smtp_host or ""
        recipients = tuple(a.strip() for a in (self.smtp_to or "").split(",") if a.strip())
        sender = self.smtp_from or (
            self.smtp_user
            if self.smtp_user and "@" in self.smtp_user
            else f"kotomi-backup@{socket.getfqdn()}"
        )
        try:
            return SmtpChannel(
                host=host,
                port=self.smtp_port,
                security=self.smtp_security.strip().lower(),  # type: ignore[arg-type]
                user=self.smtp_user or None,
                password=self.smtp_password or None,
                sender=sender,
                recipients=recipients,
                timeout=self.timeout_seconds,
            )
        except ConfigError as exc:
            return _Misconfigured(f"email via {host}", str(exc))

    def send(self, alert: Alert, log: LogSink | None = None) -> Delivery:
        """Deliver on every channel; failures are logged one line each, without secrets."""
        return send_alert(alert, self.channels(), secrets=self.secrets(), log=log)

    def describe(self) -> str:
        labels = [c.label for c in self.channels()]
        return ", ".join(labels) if labels else "no channel configured"


def _env(name: str, default: Any = None) -> Any:
    """EnvVar when the variable is set (the UI shows the name, never the value), else default."""
    return EnvVar(name) if os.environ.get(name) else default


def alert_notifier_from_env() -> AlertNotifier:
    port = os.environ.get("KOTOMI_BACKUP_SMTP_PORT")
    return AlertNotifier(
        webserver_base_url=_env("KOTOMI_BACKUP_WEBSERVER_URL", DEFAULT_WEBSERVER_URL),
        webhook_url=_env("KOTOMI_BACKUP_ALERT_WEBHOOK_URL"),
        smtp_host=_env("KOTOMI_BACKUP_SMTP_HOST"),
        smtp_port=EnvVar.int("KOTOMI_BACKUP_SMTP_PORT") if port else None,
        smtp_security=_env("KOTOMI_BACKUP_SMTP_SECURITY", "starttls"),
        smtp_user=_env("KOTOMI_BACKUP_SMTP_USER"),
        smtp_password=_env("KOTOMI_BACKUP_SMTP_PASSWORD"),
        smtp_from=_env("KOTOMI_BACKUP_SMTP_FROM"),
        smtp_to=_env("KOTOMI_BACKUP_SMTP_TO"),
        slack_token=_env("KOTOMI_BACKUP_SLACK_TOKEN"),
        slack_channel=_env("KOTOMI_BACKUP_SLACK_CHANNEL"),
    )


__all__ = [
    "DEFAULT_WEBSERVER_URL",
    "NOTIFIER_KEY",
    "AlertNotifier",
    "SlackChannel",
    "alert_notifier_from_env",
]
