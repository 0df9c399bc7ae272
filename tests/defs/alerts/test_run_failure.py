"""A failed backup run alerts once, on every channel, with the stage and the run's URL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    JobDefinition,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    instance_for_test,
    reconstructable,
)
from dagster._serdes import serialize_value

from kotomi_backup_dagster.defs.alerts.run_failure import (
    RUN_FAILURE_SENSOR,
    advice_for,
    error_first_line,
)
from kotomi_backup_dagster.defs.factory import definitions_from_env
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.settings import BackupSettings
from tests.conftest import AgeKey

from .conftest import (
    SmtpServer,
    WebhookReceiver,
    alert_env,
    assert_no_secret,
    backup_env,
    free_port,
    unreachable_s3,
)


def code_location() -> Definitions:
    return definitions_from_env()


def kotomi_backup_job() -> JobDefinition:
    """Module-level, so Dagster can reconstruct the job."""
    return code_location().resolve_job_def("kotomi_backup")


def drill_location() -> Definitions:
    return definitions_from_env()


def kotomi_restore_drill_job() -> JobDefinition:
    return drill_location().resolve_job_def("kotomi_restore_drill")


def run_failure_alert(instance: DagsterInstance, run_id: str, defs: Definitions) -> None:
    """What the daemon does for a failed run: the run-failure sensor on its failure event."""
    failure = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records[0]
    event, run = failure.event_log_entry.dagster_event, instance.get_run_by_id(run_id)
    assert event is not None and run is not None
    with build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources=defs.resources,
    ) as context:
        defs.resolve_sensor_def(RUN_FAILURE_SENSOR)(context.for_run_failure())


def test_an_inline_age_identity_drills_and_a_bad_one_never_reaches_logs_or_alerts(
    monkeypatch: pytest.MonkeyPatch,
    kotomi_db: Path,
    tmp_path: Path,
    webhook: WebhookReceiver,
    age_key: AgeKey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KOTOMI_BACKUP_AGE_IDENTITY holding the key itself (as SOPS hands it over)."""
    backup_env(monkeypatch, kotomi_db, tmp_path)
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_RECIPIENTS", age_key.recipient)
    run_backup(BackupSettings.from_env())
    key = age_key.identity_file.read_text().split()[-1]
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=None)
    caplog.set_level(logging.INFO)
    with instance_for_test() as instance:
        monkeypatch.setenv("KOTOMI_BACKUP_AGE_IDENTITY", key)
        good = execute_job(reconstructable(kotomi_restore_drill_job), instance=instance)
        assert good.success

        typo = key[:-1] + ("q" if key[-1] != "q" else "p")
        monkeypatch.setenv("KOTOMI_BACKUP_AGE_IDENTITY", typo)
        bad = execute_job(
            reconstructable(kotomi_restore_drill_job), instance=instance, raise_on_error=False
        )
        assert not bad.success
        run_failure_alert(instance, bad.run_id, drill_location())
        (post,) = webhook.posts
        assert "not an age identity" in post.body["alert"]["error"]

        event_log = [serialize_value(e) for e in instance.all_logs(bad.run_id)]
        compute_logs = [
            p.read_bytes().decode(errors="replace")
            for p in Path(instance.root_directory).rglob("*")
            if p.is_file() and p.suffix in (".err", ".out", ".complete", ".log", "")
        ]
        lines = [r.getMessage() for r in caplog.records] + capsys.readouterr().err.splitlines()
        texts = [*event_log, *compute_logs, *lines, serialize_value(post.body)]
        assert any(bad.run_id in t for t in texts)  # the run's texts are there to be searched
        assert_no_secret(texts, typo, typo[20:40])


def test_failed_upload_alerts_once_by_webhook_and_email_and_a_down_webhook_spares_email(
    monkeypatch: pytest.MonkeyPatch,
    kotomi_db: Path,
    tmp_path: Path,
    webhook: WebhookReceiver,
    smtp_server: SmtpServer,
    age_key: AgeKey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = backup_env(monkeypatch, kotomi_db, tmp_path)
    dest.mkdir()
    (dest / "kotomi").write_text("a file where the backup folder should be")  # upload fails
    monkeypatch.setenv("KOTOMI_BACKUP_UPLOAD_RETRY_DELAY", "0")  # retried, without waiting
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_RECIPIENTS", age_key.recipient)
    monkeypatch.setenv("KOTOMI_BACKUP_AGE_IDENTITY", str(age_key.identity_file))
    identity = age_key.identity_file.read_text().split()[-1]
    assert identity.startswith("AGE-SECRET-KEY-")
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=smtp_server.port)
    defs = code_location()
    sensor = defs.resolve_sensor_def(RUN_FAILURE_SENSOR)
    assert sensor.default_status == DefaultSensorStatus.RUNNING

    caplog.set_level(logging.INFO)
    with instance_for_test() as instance:

        def tick(cursor: str | None) -> str | None:
            with build_sensor_context(
                instance=instance, cursor=cursor, resources=defs.resources
            ) as context:
                return sensor.evaluate_tick(context).cursor

        cursor = tick(None)  # the first tick only sets the cursor
        result = execute_job(
            reconstructable(kotomi_backup_job), instance=instance, raise_on_error=False
        )
        assert not result.success
        cursor = tick(cursor)
        for _ in range(2):
            cursor = tick(cursor)  # later ticks do not repeat it

        assert len(webhook.posts) == 1
        assert len(smtp_server.messages) == 1
        run_url = f"http://dagster.example.test:3000/runs/{result.run_id}"
        alert = webhook.posts[0].body["alert"]
        assert alert["database"] == "kotomi"
        assert alert["what"] == "upload stage"
        assert alert["run_url"] == run_url
        assert alert["error"].startswith("NotADirectoryError: ") or "upload" in alert["error"]
        assert "Exceeded max_retries" not in alert["error"]  # the cause, not the retry wrapper
        assert "Re-execute from failure" in alert["next_step"]
        assert alert["details"]["failed_steps"] == "kotomi__upload"
        mail = smtp_server.messages[0]
        assert mail["Subject"] == "[kotomi-backup] FAILED kotomi: upload stage"
        assert mail["To"] == "oncall@example.test, second@example.test"
        body = mail.get_content()
        assert f"Run: {run_url}" in body and "What: upload stage" in body

        # The same failure with the webhook down: the email still goes out.
        monkeypatch.setenv(
            "KOTOMI_BACKUP_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook/x-secret-x"
        )
        run_failure_alert(instance, result.run_id, code_location())
        assert len(webhook.posts) == 1
        assert len(smtp_server.messages) == 2
        assert smtp_server.messages[1]["Subject"] == mail["Subject"]
        # Dagster's sensor loggers write to stderr; everything else goes through logging.
        lines = [r.getMessage() for r in caplog.records] + capsys.readouterr().err.splitlines()
        assert any(
            "alert not delivered by webhook http://127.0.0.1:" in line
            and line.endswith(": connection refused")
            for line in lines
        )
        assert any("sent by webhook http://127.0.0.1:" in line for line in lines)

        # No secret anywhere: event log, files written, messages, log lines.
        event_log = [serialize_value(e) for e in instance.all_logs(result.run_id)]
        files = [
            p.read_bytes().decode(errors="replace")
            for root in (dest, tmp_path / "staging")
            for p in root.rglob("*")
            if p.is_file() and p.suffix in ("", ".json")
        ]
        texts = [p.body["text"] for p in webhook.posts] + smtp_server.texts()
        assert_no_secret(
            [*event_log, *files, *texts, *lines, serialize_value(webhook.posts[0].body)],
            identity,
            "x-secret-x",
        )


def test_error_line_and_advice_pick_the_users_error_and_the_stage() -> None:
    from dagster_shared.error import SerializableErrorInfo

    cause = SerializableErrorInfo("builtins.OSError: disk full\ntrace", [], "OSError")
    wrapped = SerializableErrorInfo(
        "dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred\n",
        [],
        "DagsterExecutionStepExecutionError",
        cause=cause,
    )
    assert error_first_line(wrapped) == "OSError: disk full"
    failure = SerializableErrorInfo(
        "dagster._core.definitions.events.Failure: upload to s3://b failed\nmore", [], "Failure"
    )
    assert error_first_line(failure) == "upload to s3://b failed"
    retry = SerializableErrorInfo(
        "Exceeded max_retries of 2\n", [], "RetryRequestedFromPolicy", cause=failure
    )
    assert error_first_line(retry) == "upload to s3://b failed"
    assert "nothing was uploaded" in advice_for(["snapshot_verify"], "kotomi_backup")
    assert "drill" in advice_for(["restore_drill"], "kotomi_restore_drill")
    assert "only the upload runs again" in advice_for(["upload"], "kotomi_backup")
    assert "Re-execute" in advice_for(["mystery"], "other_job")


def test_a_failed_drill_check_is_named_with_its_description(
    webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill-like job whose asset check fails: the alert names the check, not the step."""
    key = AssetKey(["kotomi", "restore_drill"])

    @asset(key=key, check_specs=[AssetCheckSpec("integrity", asset=key, blocking=True)])
    def restore_drill() -> MaterializeResult:  # type: ignore[type-arg]
        return MaterializeResult(
            check_results=[
                AssetCheckResult(
                    check_name="integrity",
                    passed=False,
                    description="20261127T020000Z-abc123 at file:///srv: page 7 never used\nmore",
                )
            ]
        )

    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=None)
    alerts = code_location()
    job = Definitions(assets=[restore_drill]).resolve_implicit_global_asset_job_def()
    with instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, tags={"kotomi_backup/database": "kotomi"}
        )
        assert not result.success
        run_failure_alert(instance, result.run_id, alerts)
    (post,) = webhook.posts
    alert = post.body["alert"]
    assert alert["database"] == "kotomi"
    assert alert["what"] == "integrity check on kotomi/restore_drill"
    assert alert["error"] == "20261127T020000Z-abc123 at file:///srv: page 7 never used"
    assert "do not count on it" in alert["next_step"]


def prune_location() -> Definitions:
    return definitions_from_env()


def kotomi_prune_job() -> JobDefinition:
    return prune_location().resolve_job_def("kotomi_prune")


def test_a_prune_that_cannot_connect_alerts_with_the_url_once_and_the_network_to_check(
    monkeypatch: pytest.MonkeyPatch, kotomi_db: Path, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    backup_env(monkeypatch, kotomi_db, tmp_path)
    unreachable_s3(monkeypatch, tmp_path)
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "0")
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=None)
    with instance_for_test() as instance:
        result = execute_job(
            reconstructable(kotomi_prune_job), instance=instance, raise_on_error=False
        )
        assert not result.success
        run_failure_alert(instance, result.run_id, prune_location())
    (post,) = webhook.posts
    alert = post.body["alert"]
    url = "s3://offsite-bucket/prod"
    assert alert["what"] == "prune stage"
    assert alert["error"].count(url) == 1, alert["error"]  # was "s3://..: s3://..: listing"
    assert "could not connect to the endpoint" in alert["error"]
    assert not alert["error"].startswith("BackupError")
    assert "reachable" in alert["next_step"] and "permissions" not in alert["next_step"]
    assert "nothing is lost" in alert["next_step"]


def test_our_errors_lose_their_class_name_and_unexpected_ones_keep_it() -> None:
    from dagster_shared.error import SerializableErrorInfo

    ours = SerializableErrorInfo(
        "kotomi_backup_dagster.engine.errors.BackupError: s3://b/p: s3://b/p: listing failed\n",
        [],
        "BackupError",
    )
    assert error_first_line(ours) == "s3://b/p: listing failed"
    theirs = SerializableErrorInfo("builtins.KeyError: 'size'\n", [], "KeyError")
    assert error_first_line(theirs) == "KeyError: 'size'"
    refused = (
        "s3://b/p: listing kotomi/ failed after 6 attempts (could not connect to the endpoint)"
    )
    assert "reachable" in advice_for(["prune"], "kotomi_prune", refused)
    denied = "destination s3://b/p: access denied; check the credentials (AccessDenied)"
    assert "credentials" in advice_for(["upload"], "kotomi_backup", denied)
    assert "only the upload runs again" in advice_for(["upload"], "kotomi_backup", denied)


def test_materialize_all_over_two_databases_says_what_became_of_each(
    monkeypatch: pytest.MonkeyPatch, kotomi_db: Path, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    """One run over both databases fails when one does: each failed step names its database,
    and the alert and the run's own log say what became of every database in it."""
    backup_env(monkeypatch, kotomi_db, tmp_path)
    missing = tmp_path / "gone" / "blog.db"
    monkeypatch.setenv("KOTOMI_BACKUP_DATABASES", f"blog={missing},kotomi={kotomi_db}")
    alert_env(monkeypatch, webhook_url=webhook.url(), smtp_port=None)
    defs = definitions_from_env()
    everything = defs.resolve_implicit_global_asset_job_def()  # the UI's "Materialize all"
    with instance_for_test() as instance:
        result = everything.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        [failure] = result.get_step_failure_events()
        user_failure = failure.step_failure_data.user_failure_data
        assert failure.step_key == "blog__snapshot"
        assert user_failure is not None and user_failure.description.startswith(
            "snapshot of blog: "
        )
        [upload] = result.asset_materializations_for_node("kotomi__upload")
        backup_id = upload.metadata["backup_id"].value
        run_failure_alert(instance, result.run_id, defs)
        logged = [
            e.message
            for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if e.message.startswith("outcome per database: ")
        ]
    (post,) = webhook.posts
    alert = post.body["alert"]
    assert alert["database"] == "blog, kotomi"  # was "(all databases)"
    outcome = alert["details"]["outcome"]
    assert outcome.startswith("blog: failed at snapshot: snapshot of blog: "), outcome
    assert outcome.endswith(f"; kotomi: backed up ({backup_id})"), outcome
    assert alert["error"].startswith("snapshot of blog: ")
    assert logged == [f"outcome per database: {outcome}"]
