"""One alert per failed run of any job in this code location (backup, prune, drill, restore).

The alert names the failed stage(s), found from the run's event log (STEP_FAILURE events and
failed asset-check evaluations), the error's first line, the run's URL and what to do next.
"""

import re
from collections.abc import Mapping, Sequence

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    run_failure_sensor,
)
from dagster._core.execution.stats import StepEventStatus
from dagster_shared.error import SerializableErrorInfo

from ...engine.errors import first_line, without_repeated_prefix
from ...engine.notify import Alert, destination_advice
from ..databases import DATABASE_TAG, DatabaseSpec
from .resources import AlertNotifier

RUN_FAILURE_SENSOR = "kotomi_backup_run_failure_alerts"

REEXECUTE = "then use 'Re-execute from failure' on the run's page"
# First match wins: the stage name is tested against each key in this order.
STAGE_ADVICE: tuple[tuple[str, str], ...] = (
    (
        "verify",
        "The live database failed its check, so nothing was uploaded. Do not prune old "
        "backups; check the database (`kotomi-backup verify PATH --full`) and, if it is "
        "damaged, restore the latest good backup or salvage it with `kotomi-backup recover`.",
    ),
    (
        "drill",
        "The backup did not restore cleanly in the drill: do not count on it. Read the "
        "drill's problems on the run's page, take a fresh backup and drill it "
        "(`kotomi-backup drill latest`).",
    ),
    (
        "restore",
        "The restore did not complete: keep the application stopped, read the run's log, "
        "and restore by hand with `kotomi-backup restore latest --db PATH` if needed.",
    ),
    (
        "prune",
        "Old backups were not (all) deleted; nothing is lost. Check the destination's "
        f"permissions, {REEXECUTE}.",
    ),
    (
        "upload",
        "Check that the destination is reachable and writable (credentials, network, free "
        f"space); {REEXECUTE}: only the upload runs again, from the staged archive.",
    ),
    (
        "archive",
        f"Check KOTOMI_BACKUP_AGE_RECIPIENTS and the staging directory's free space; {REEXECUTE}.",
    ),
    (
        "snapshot",
        "Check that KOTOMI_DB_PATH points at the live database, that it is readable and its "
        f"directory writable (WAL needs the -shm file); {REEXECUTE}.",
    ),
)
DEFAULT_ADVICE = f"Open the run, read the failed step's log and fix the cause; {REEXECUTE}."
# Stages that talk to a destination: what to check first follows the error's cause.
STORE_STAGES: tuple[tuple[str, str, str], ...] = (
    ("prune", "Old backups were not (all) deleted; nothing is lost. ", f"{REEXECUTE}."),
    ("upload", "", f"{REEXECUTE}: only the upload runs again, from the staged archive."),
)
_QUALIFIED = re.compile(r"^((?:[A-Za-z_][\w]*\.)+)([A-Za-z_]\w*): ")
OWN_PACKAGE = "kotomi_backup_dagster."


def stage_of(step_key: str) -> str:
    """``kotomi__upload`` -> ``upload``; an op's step key is its own stage."""
    return step_key.rsplit("__", 1)[-1]


def advice_for(stages: Sequence[str], job_name: str, error: str = "") -> str:
    for stage in [*stages, job_name]:
        for word, lead, tail in STORE_STAGES:
            cause = destination_advice(error) if word in stage else None
            if cause:
                return f"{lead}{cause}; {tail}"
        for word, advice in STAGE_ADVICE:
            if word in stage:
                return advice
    return DEFAULT_ADVICE


def _is_wrapper(error: SerializableErrorInfo) -> bool:
    """Dagster's own wrappers around the user's error (step errors, retry policies)."""
    name = error.cls_name or ""
    return name.startswith("Dagster") or name.startswith("RetryRequested")


def error_first_line(error: SerializableErrorInfo | None) -> str:
    """The user's error, not Dagster's wrapper: follow the cause past Dagster*Error wrappers;
    drop the module path from the class name, and the class itself for `Failure` and this
    package's errors (their message says what they are); a location said twice, once."""
    while error is not None and error.cause is not None and _is_wrapper(error):
        error = error.cause
    if error is None:
        return ""
    line = first_line(error.message)
    match = _QUALIFIED.match(line)
    if match:
        own = match.group(1).startswith(OWN_PACKAGE) or match.group(2) == "Failure"
        line = line[match.end() :] if own else line[match.start(2) :]
    return without_repeated_prefix(line)


def step_error_line(event: DagsterEvent) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return without_repeated_prefix(first_line(data.user_failure_data.description))
    return error_first_line(data.error)


def database_of(
    tags: Mapping[str, str], job_name: str, step_keys: Sequence[str], names: Mapping[str, str]
) -> str:
    """The run's database: its tag, else the spec whose key prefixes the job or a step key."""
    if tags.get(DATABASE_TAG):
        return tags[DATABASE_TAG]
    for candidate in [*step_keys, job_name]:
        for key in sorted(names, key=len, reverse=True):
            if candidate.startswith(f"{key}__") or candidate.startswith(f"{key}_"):
                return names[key]
    return "(all databases)" if len(names) != 1 else next(iter(names.values()))


def database_outcomes(
    instance: DagsterInstance,
    run: DagsterRun,
    names: Mapping[str, str],
    step_failures: Sequence[DagsterEvent],
) -> dict[str, str]:
    """{database: what became of it} for each database whose steps the run had: `failed at
    <stage>: <its line>`, `backed up (<backup id>)`, `succeeded`, or the stages not run. One
    failure fails the whole run: this says what happened to each of its databases."""
    planned = list(run.step_keys_to_execute or [])
    if not planned and run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        planned = list(plan.step_keys_to_execute)
    stats = {s.step_key: s for s in instance.get_run_step_stats(run.run_id)}
    errors = {e.step_key: step_error_line(e) for e in reversed(step_failures) if e.step_key}
    by_database: dict[str, list[str]] = {}
    for step_key in planned:
        key = step_key.split("__", 1)[0]
        if key in names and "__" in step_key:
            by_database.setdefault(names[key], []).append(step_key)
    outcomes: dict[str, str] = {}
    for name, steps in by_database.items():
        failed_step = next((k for k in steps if k in errors), None)
        if failed_step is not None:
            outcomes[name] = f"failed at {stage_of(failed_step)}: {errors[failed_step]}"
            continue
        done = [k for k in steps if (st := stats.get(k)) and st.status == StepEventStatus.SUCCESS]
        if len(done) < len(steps):
            missing = ", ".join(stage_of(k) for k in steps if k not in done)
            outcomes[name] = f"not finished ({missing} not run)"
            continue
        backup_ids = [
            str(entry.asset_materialization.metadata["backup_id"].value)
            for k in steps
            if stage_of(k) == "upload"
            for entry in stats[k].materialization_events
            if entry.asset_materialization and "backup_id" in entry.asset_materialization.metadata
        ]
        outcomes[name] = f"backed up ({backup_ids[-1]})" if backup_ids else "succeeded"
    return outcomes


def outcome_line(outcomes: Mapping[str, str]) -> str:
    return "; ".join(f"{name}: {outcome}" for name, outcome in sorted(outcomes.items()))


def run_failure_alert(
    context: RunFailureSensorContext, notifier: AlertNotifier, names: Mapping[str, str]
) -> Alert:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    step_keys = [e.step_key for e in step_failures if e.step_key]
    failed_checks: list[AssetCheckEvaluation] = []
    for record in context.instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if (
            isinstance(evaluation, AssetCheckEvaluation)
            and not evaluation.passed
            and evaluation.severity == AssetCheckSeverity.ERROR
        ):
            failed_checks.append(evaluation)

    labels: list[str] = []
    errors: list[str] = []
    for check in failed_checks:
        asset = "/".join(check.asset_key.path)
        labels.append(f"{check.check_name} check on {asset}")
        errors.append(first_line(check.description) or "the check failed")
    check_names = {c.check_name for c in failed_checks}
    checked_assets = {c.asset_key.path[-1] for c in failed_checks}
    stages = [stage_of(k) for k in step_keys]
    for step_key, stage, event in zip(step_keys, stages, step_failures, strict=False):
        error = event.step_failure_data.error
        if check_names and (
            any(step_key.endswith(f"_{name}") for name in check_names)
            or stage in checked_assets  # a drill: its red checks name the failure
            or (error is not None and error.cls_name == "DagsterAssetCheckFailedError")
        ):
            continue  # the step failed because of a check above, which says it better
        labels.append(f"{stage} stage")
        errors.append(step_error_line(event))
    if not labels:
        labels.append("run")
        failure = context.failure_event
        data = failure.event_specific_data
        error = getattr(data, "error", None)
        errors.append(error_first_line(error) or first_line(failure.message) or "the run failed")

    details = {"job": run.job_name, "run_id": run.run_id}
    if step_keys:
        details["failed_steps"] = ", ".join(step_keys)
    retried = [
        first_line(e.step_failure_data.error.message)
        for e in step_failures
        if e.step_failure_data.error is not None
        and (e.step_failure_data.error.cls_name or "").startswith("RetryRequested")
    ]
    if retried:
        details["retries"] = retried[0]  # "Exceeded max_retries of 2"
    error_line = next((e for e in errors if e), "no error message")
    database = database_of(run.tags, run.job_name, step_keys, names)
    outcomes = database_outcomes(context.instance, run, names, step_failures)
    if len(outcomes) > 1:  # "Materialize all": one run, several databases
        database = ", ".join(sorted(outcomes))
        details["outcome"] = outcome_line(outcomes)
        error_line = "; ".join(dict.fromkeys(e for e in errors if e)) or error_line
    return Alert(
        database=database,
        what=", ".join(labels),
        error=error_line,
        next_step=advice_for([*stages, *check_names], run.job_name, error_line),
        kind="run_failure",
        run_url=notifier.run_url(run.run_id),
        details=details,
    )


def build_run_failure_sensor(specs: Sequence[DatabaseSpec]) -> SensorDefinition:
    names = {spec.key: spec.name for spec in specs}

    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=(
            "Alerts once per failed run of any job in this code location: the failed stage, "
            "the error's first line, the run's URL and what to do next."
        ),
    )
    def run_failure_alerts(context: RunFailureSensorContext, alert_notifier: AlertNotifier) -> None:
        alert = run_failure_alert(context, alert_notifier, names)
        if "outcome" in alert.details:  # the run's page says it too, after its failure
            context.instance.report_engine_event(
                f"outcome per database: {alert.details['outcome']}", context.dagster_run
            )
        delivery = alert_notifier.send(alert, context.log)
        if delivery.failed and not delivery.sent:
            context.log.error(f"the alert for run {context.dagster_run.run_id} reached no channel")

    return run_failure_alerts
