"""The alert notifier: one resource, several channels (webhook, email, Slack), from the env.

Its settings (KOTOMI_BACKUP_WEBSERVER_URL, _ALERT_WEBHOOK_URL, _SMTP_*, _SLACK_*) are in the
settings table (engine/config.py); each is read through `EnvVar` when set, so the UI shows
names, never values.
"""

import socket
from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource
from dagster_slack import SlackResource
from pydantic import Field

from ...engine import config
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
from ..envvars import env_fields, setting_field

NOTIFIER_KEY = "alert_notifier"
DEFAULT_WEBSERVER_URL = config.WEBSERVER_URL.default


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

    webserver_base_url: str = setting_field(config.WEBSERVER_URL)
    webhook_url: str | None = setting_field(config.ALERT_WEBHOOK_URL, note="; a secret")
    smtp_host: str | None = setting_field(config.SMTP_HOST)
    smtp_port: int | None = setting_field(config.SMTP_PORT, note="; unset: 587, 465 or 25")
    smtp_security: str = setting_field(config.SMTP_SECURITY)
    smtp_user: str | None = setting_field(config.SMTP_USER)
    smtp_password: str | None = setting_field(config.SMTP_PASSWORD, note="; a secret")
    smtp_from: str | None = setting_field(config.SMTP_FROM)
    smtp_to: str | None = setting_field(config.SMTP_TO)
    slack_token: str | None = setting_field(config.SLACK_TOKEN, note="; a secret")
    slack_channel: str | None = setting_field(config.SLACK_CHANNEL)
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
                        f"set both {config.SLACK_TOKEN.name} and {config.SLACK_CHANNEL.name}",
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
                security=self.smtp_security,  # type: ignore[arg-type]  # SmtpChannel checks it
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


# Resource field -> its setting.
NOTIFIER_FIELDS: dict[str, config.Setting[Any]] = {
    "webserver_base_url": config.WEBSERVER_URL,
    "webhook_url": config.ALERT_WEBHOOK_URL,
    "smtp_host": config.SMTP_HOST,
    "smtp_port": config.SMTP_PORT,
    "smtp_security": config.SMTP_SECURITY,
    "smtp_user": config.SMTP_USER,
    "smtp_password": config.SMTP_PASSWORD,
    "smtp_from": config.SMTP_FROM,
    "smtp_to": config.SMTP_TO,
    "slack_token": config.SLACK_TOKEN,
    "slack_channel": config.SLACK_CHANNEL,
}


def alert_notifier_from_env(environ: Mapping[str, str] | None = None) -> AlertNotifier:
    return AlertNotifier(**env_fields(NOTIFIER_FIELDS, environ))


__all__ = [
    "DEFAULT_WEBSERVER_URL",
    "NOTIFIER_KEY",
    "AlertNotifier",
    "SlackChannel",
    "alert_notifier_from_env",
]
