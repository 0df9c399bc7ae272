"""The notifier's channels against real receivers on loopback: webhook, SMTP, Slack's API."""

from __future__ import annotations

import logging

import pytest
from dagster_slack import SlackResource
from slack_sdk import WebClient

from kotomi_backup_dagster.defs.alerts.resources import AlertNotifier, alert_notifier_from_env
from kotomi_backup_dagster.engine.notify import (
    Alert,
    SmtpChannel,
    SmtpSecurity,
    WebhookChannel,
    send_alert,
)

from .conftest import (
    SLACK_TOKEN,
    SMTP_PASSWORD,
    SMTP_USER,
    WEBHOOK_TOKEN,
    SmtpServer,
    WebhookReceiver,
    alert_env,
    assert_no_secret,
)

LOG = logging.getLogger("test.alerts")


def sample_alert(error: str = "upload to file:///srv failed: disk full") -> Alert:
    return Alert(
        database="kotomi",
        what="upload stage",
        error=error,
        next_step="Free space, then re-execute from failure.",
        run_url="http://dagster.example.test:3000/runs/abc123",
        destination="file:///srv/backups",
        details={"job": "kotomi_backup"},
    )


def notifier(**overrides: object) -> AlertNotifier:
    return AlertNotifier(**overrides)  # type: ignore[arg-type]


def test_webhook_payload_works_for_slack_mattermost_discord_and_structured_receivers(
    webhook: WebhookReceiver,
) -> None:
    WebhookChannel(webhook.url()).send(sample_alert())
    (post,) = webhook.posts
    assert post.headers["Content-Type"] == "application/json"
    body = post.body
    assert body["text"].startswith("[kotomi-backup] FAILED kotomi: upload stage")
    assert body["content"] == body["text"]  # Discord
    alert = body["alert"]
    assert alert["database"] == "kotomi" and alert["status"] == "firing"
    assert alert["run_url"] == "http://dagster.example.test:3000/runs/abc123"
    assert alert["error"] == "upload to file:///srv failed: disk full"
    assert "Next: Free space" in body["text"]


def test_every_channel_gets_the_alert_and_a_down_channel_does_not_stop_the_others(
    webhook: WebhookReceiver,
    smtp_server: SmtpServer,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"http://127.0.0.1:{closed_port}/hooks/{WEBHOOK_TOKEN}?key={WEBHOOK_TOKEN}"
    smtp = SmtpChannel(
        host="127.0.0.1",
        port=smtp_server.port,
        security="none",
        user=SMTP_USER,
        password=SMTP_PASSWORD,
        sender="kotomi-backup@example.test",
        recipients=("oncall@example.test",),
    )
    secrets = [down, WEBHOOK_TOKEN, SMTP_PASSWORD]
    with caplog.at_level(logging.INFO, logger="test.alerts"):
        delivery = send_alert(
            sample_alert(), [WebhookChannel(down), smtp], secrets=secrets, log=LOG
        )
    assert delivery.delivered
    assert delivery.sent == (f"email via 127.0.0.1:{smtp_server.port} (none)",)
    (failure,) = delivery.failed
    assert failure == f"webhook http://127.0.0.1:{closed_port}: connection refused"
    assert smtp_server.logins == [(SMTP_USER, SMTP_PASSWORD)]
    (mail,) = smtp_server.messages
    assert mail["Subject"] == "[kotomi-backup] FAILED kotomi: upload stage"
    assert "Run: http://dagster.example.test:3000/runs/abc123" in mail.get_content()
    ours = [r for r in caplog.records if r.name == "test.alerts"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert warnings == [f"alert not delivered by {failure}"]
    assert_no_secret([r.getMessage() for r in caplog.records] + smtp_server.texts())


def test_secrets_inside_an_error_are_redacted_before_any_channel_sees_them(
    webhook: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    n = notifier(
        webhook_url=webhook.url(),
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_to="oncall@example.test",
    )
    leaky = sample_alert(error=f"login with {SMTP_PASSWORD} to {webhook.url()} failed")
    delivery = n.send(leaky)
    assert len(delivery.sent) == 2
    texts = [p.body["text"] for p in webhook.posts] + smtp_server.texts()
    assert all("***" in t for t in texts)
    assert_no_secret(texts)


def test_smtp_failures_are_one_clear_line(smtp_server: SmtpServer, closed_port: int) -> None:
    def channel(port: int, security: SmtpSecurity, password: str | None = None) -> SmtpChannel:
        return SmtpChannel(
            host="127.0.0.1",
            sender="a@example.test",
            recipients=("b@example.test",),
            timeout=5.0,
            port=port,
            security=security,
            user=SMTP_USER if password else None,
            password=password,
        )

    wrong_password = channel(smtp_server.port, "none", password="nope-nope")
    no_tls = channel(smtp_server.port, "starttls")
    nobody = channel(closed_port, "none")
    delivery = send_alert(sample_alert(), [wrong_password, no_tls, nobody])
    assert not delivery.delivered
    reasons = [f.split(": ", 1)[1] for f in delivery.failed]
    assert reasons[0].startswith("login refused (535)")
    assert reasons[1].startswith("the server offers no STARTTLS")
    assert reasons[2] == "connection refused"
    assert smtp_server.messages == []


def test_slack_channel_posts_through_slack_resource(
    webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = f"http://127.0.0.1:{webhook.port}/api/"
    monkeypatch.setattr(
        SlackResource, "get_client", lambda self: WebClient(token=self.token, base_url=api)
    )
    delivery = notifier(slack_token=SLACK_TOKEN, slack_channel="#ops").send(sample_alert())
    assert delivery.sent == ("slack #ops",)
    (post,) = webhook.posts
    assert post.path == "/api/chat.postMessage"
    assert post.body["channel"] == "#ops"
    assert "upload stage" in post.body["text"]
    assert post.headers["Authorization"] == f"Bearer {SLACK_TOKEN}"  # only in the header
    assert_no_secret([post.body["text"]])


def test_notifier_from_env_and_incomplete_channels_fail_with_what_to_set(
    monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer, webhook: WebhookReceiver
) -> None:
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=smtp_server.port)
    monkeypatch.setenv("KOTOMI_BACKUP_SLACK_CHANNEL", "#ops")  # no token
    n = alert_notifier_from_env().process_config_and_initialize()  # resolves the EnvVars
    assert n.run_url("r1") == "http://dagster.example.test:3000/runs/r1"
    assert n.smtp_port == smtp_server.port and n.smtp_password == SMTP_PASSWORD
    assert WEBHOOK_TOKEN not in n.describe()
    delivery = n.send(sample_alert())
    assert len(delivery.sent) == 2
    assert delivery.failed == (
        "slack: set both KOTOMI_BACKUP_SLACK_TOKEN and KOTOMI_BACKUP_SLACK_CHANNEL",
    )


def test_no_channel_configured_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.alerts"):
        delivery = notifier().send(sample_alert(), LOG)
    assert delivery.no_channel and not delivery.delivered
    assert "no alert channel configured" in caplog.text


def test_webhook_url_secrets_cover_the_token_but_not_ordinary_words() -> None:
    from kotomi_backup_dagster.engine.redaction import redact, url_secrets

    url = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx"
    secrets = url_secrets(url)
    text = f"posting to services at {url} with abcdefghijklmnopqrstuvwx failed"
    assert redact(text, secrets) == "posting to services at *** with *** failed"
    discord = "https://discord.com/api/webhooks/123456789012345678/" + "t" * 68
    assert "t" * 68 in url_secrets(discord)
