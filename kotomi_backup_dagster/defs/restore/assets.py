"""Restore drills as assets downstream of the upload: the weekly `restore_drill` (latest
backup, every destination) and the monthly `restore_test` (every retained backup, or a sample
of the oldest). Each check is an asset check; a backup that does not restore shows red checks
and fails the asset itself (its step's headline says which backup and why)."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ...engine.destinations import at_each_destination, failed
from ...engine.drill import CHECKS, RetainedDrills, drill_retained, drill_store
from ...engine.errors import ConfigError
from ...engine.layout import DrillRecord
from ...engine.manifest import Manifest
from ...engine.priority import in_background
from ...engine.retention import RetentionPolicy
from ...engine.stores import BackupStore
from ..backup.assets import SETTINGS_KEY, group_of
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec
from ..engine_log import engine_log_in
from ..failures import failure, one_line_failures
from ..options import KotomiBackupOptions
from ..replicate import replicate_asset
from ..retention.assets import RETENTION_KEY
from ..retention.resources import RetentionPolicyResource
from ..scheduling import overdue_after

CHECK_DESCRIPTIONS = {
    "checksums": "Archive and database sha256 equal the manifest's.",
    "integrity": "PRAGMA integrity_check of the restored file returns exactly ok.",
    "row_counts": "Every table's row count equals the manifest's.",
    "kotomi_queries": "The read queries Kotomi serves run on the restored file.",
}
# What a passed check compared, for its result's description ("... on 2 backups: <ids>").
CHECK_PASSED = {
    "checksums": "the archive's and the restored database's sha256 equal the manifest's",
    "integrity": "integrity_check of the restored database returned exactly ok",
    "row_counts": "every table's row count equals the manifest's",
    "kotomi_queries": "Kotomi's read queries ran on the restored database",
}


DrillResults = list[tuple[str, Manifest, DrillRecord]]  # (safe url, backup, its drill)


@dataclass(frozen=True)
class Drilled:
    """The drills of one database at every destination."""

    results: DrillResults
    not_run: list[str]  # "<url>: why" of each destination that could not be drilled
    # (safe url, backup) in no retention tier, left out of a restore test: prune removes them
    not_retained: list[tuple[str, Manifest]] = field(default_factory=list)

    def verdict(self, which: str, name: str) -> str | None:
        """One line when any backup did not restore (said first: it is the worse news) or
        a destination could not be drilled; None when everything restored."""
        failed = [(url, m, r) for url, m, r in self.results if not r.ok]
        if failed:
            url, m, r = failed[0]
            first = r.problems[0] if r.problems else "failed"
            more = len(failed) - 1 + len(self.not_run)
            more_text = f" (and {more} more)" if more else ""
            return f"{which} of {name} backup {m.backup_id} at {url} failed{more_text}: {first}"
        if self.not_run:
            others = len(self.not_run) - 1
            more_text = f" (and {others} more)" if others else ""
            return f"{which} of {name} not run{more_text} at {self.not_run[0]}"
        return None


def _drill_all(
    context: AssetExecutionContext,
    res: KotomiBackupResource,
    spec: DatabaseSpec,
    which: str,
    policy: RetentionPolicy | None = None,
) -> Drilled:
    """Drill `which` backups at each destination (with `policy`: among those it keeps, as
    `list` shows them); one that cannot be drilled (unreachable, no backup yet) is reported
    and does not stop the others."""
    settings = res.settings(spec)

    def drill(store: BackupStore) -> RetainedDrills:
        options: dict[str, Any] = {
            "identities": settings.identities(),
            "scratch_dir": settings.staging_dir,
            "profile": settings.profile,
        }
        if policy is None:
            return RetainedDrills(drill_store(store, settings.name, which, **options), [])
        return drill_retained(store, settings.name, which, policy, **options)

    # A drill yields to Kotomi; the restore job does not.
    outcomes = in_background(settings.priority, at_each_destination, res.stores(), drill)
    results: DrillResults = []
    not_retained: list[tuple[str, Manifest]] = []
    for at in outcomes:
        if at.value is None:
            continue
        for manifest, record in at.value.drilled:
            verdict = "ok" if record.ok else "FAILED: " + "; ".join(record.problems)
            context.log.info(f"drill {manifest.backup_id} at {at.url}: {verdict}")
            results.append((at.url, manifest, record))
        if at.value.not_retained:
            ids = ", ".join(m.backup_id for m in at.value.not_retained)
            context.log.info(
                f"{at.url}: {len(at.value.not_retained)} backup(s) in no retention tier not "
                f"drilled (the next prune removes them; `list` shows no tier): {ids}"
            )
            not_retained += [(at.url, m) for m in at.value.not_retained]
    not_run = [at.error_line() for at in failed(outcomes)]
    for line in not_run:
        context.log.error(f"drill not run at {line}")
    return Drilled(results, not_run, not_retained)


def _check_results(key: AssetKey, results: DrillResults) -> list[AssetCheckResult]:
    """One result per check that ran on some backup; a check that never got to run (an
    earlier one failed on every backup) gets none rather than a false "passed"."""
    out = []
    for check in CHECKS:
        ran = [(url, r) for url, _, r in results if r.checks.get(check) is not None]
        if not ran:
            continue
        failed = [(url, r) for url, r in ran if r.checks.get(check) is False]
        where = ", ".join(f"{r.backup_id} at {url}" for url, r in failed[:5])
        first = failed[0][1].problems[0] if failed and failed[0][1].problems else ""
        out.append(
            AssetCheckResult(
                asset_key=key,
                check_name=check,
                passed=not failed,
                severity=AssetCheckSeverity.ERROR,
                description=f"failed on {where}: {first}" if failed else _passed(check, ran),
                metadata={"failed": len(failed), "checked": len(ran), "drilled": len(results)},
            )
        )
    return out


def _passed(check: str, ran: list[tuple[str, DrillRecord]]) -> str:
    """What the check compared and on which backups: `<comparison> on 2 backups: <id> at
    <url>, ...` (was "passed on 2")."""
    where = ", ".join(f"{r.backup_id} at {url}" for url, r in ran[:5])
    more = f" and {len(ran) - 5} more" if len(ran) > 5 else ""
    backups = "1 backup" if len(ran) == 1 else f"{len(ran)} backups"
    return f"{CHECK_PASSED[check]} on {backups}: {where}{more}"


def _report(
    results: DrillResults,
    not_run: Sequence[str] = (),
    not_retained: Sequence[tuple[str, Manifest]] = (),
) -> str:
    lines = [
        "| destination | backup | created | result | RTO (s) | problems |",
        "|---|---|---|---|---:|---|",
    ]
    for url, m, r in results:
        lines.append(
            f"| {url} | {m.backup_id} | {m.created_at} | {'ok' if r.ok else '**FAILED**'} "
            f"| {r.rto_seconds:.2f} | {'; '.join(r.problems)[:200]} |"
        )
    for line in not_run:
        url, _, why = line.partition(": ")
        lines.append(f"| {url} | - | - | **NOT DRILLED** | - | {why[:200]} |")
    for url, m in not_retained:
        lines.append(
            f"| {url} | {m.backup_id} | {m.created_at} | not drilled | - | in no retention "
            "tier: the next prune removes it |"
        )
    return "\n".join(lines)


def _drills_materialized(
    context: AssetExecutionContext,
    res: KotomiBackupResource,
    db: DatabaseSpec,
    label: str,
    which: str,
    summary: Callable[[DrillResults], dict[str, Any]],
    policy: RetentionPolicy | None = None,
) -> Iterator[MaterializeResult | AssetCheckResult]:  # type: ignore[type-arg]  # Dagster's generics
    """The body of both drill assets: drill, then either the materialization and its green
    checks, or red checks and a failed step whose headline says which backup and why."""
    with one_line_failures(f"{label} of {db.name}"), engine_log_in(context.log):
        drilled = _drill_all(context, res, db, which, policy)
    checks = _check_results(context.asset_key, drilled.results)
    metadata = {**(summary(drilled.results) if drilled.results else {}), **_counts(drilled)}
    verdict = drilled.verdict(label, db.name)
    if verdict:
        yield from checks
        raise failure(verdict, metadata=metadata)
    yield MaterializeResult(metadata=metadata)
    yield from checks


def _counts(drilled: Drilled) -> dict[str, Any]:
    return {
        "passed": sum(r.ok for _, _, r in drilled.results),
        "failed": sum(not r.ok for _, _, r in drilled.results),
        "destinations_not_drilled": len(drilled.not_run),
        "not_retained_not_drilled": len(drilled.not_retained),
        "report": MetadataValue.md(_report(drilled.results, drilled.not_run, drilled.not_retained)),
    }


def _drill_summary(results: DrillResults) -> dict[str, Any]:
    newest = max(m.created for _, m, _ in results)
    return {
        "backup_id": results[0][1].backup_id,
        "rto_seconds": max(r.rto_seconds for _, _, r in results),
        "db_bytes": results[0][1].db_size,
        "archive_bytes": results[0][1].archive.size,
        "backup_age_hours": round((datetime.now(UTC) - newest).total_seconds() / 3600, 2),
    }


def _test_summary(results: DrillResults) -> dict[str, Any]:
    return {
        "drilled": len(results),
        "total_rto_seconds": round(sum(r.rto_seconds for _, _, r in results), 3),
        "max_rto_seconds": max(r.rto_seconds for _, _, r in results),
    }


def _drill_checks(key: AssetKey) -> list[AssetCheckSpec]:
    # A backup that does not restore fails the step (and the run), so the failure alert fires.
    return [
        AssetCheckSpec(name, asset=key, description=text)
        for name, text in CHECK_DESCRIPTIONS.items()
    ]


def drill_freshness(options: KotomiBackupOptions) -> FreshnessPolicy | None:
    """The drill is overdue after the health sensor's drill threshold (default 8 days)."""
    return overdue_after(options.health_thresholds().drill_overdue_after)


def describe_drill(spec: DatabaseSpec) -> str:
    return (
        f"Weekly: restore the latest backup of {spec.name} from each destination into scratch "
        "space and check it (sha256, integrity_check, row counts, Kotomi's queries). Fails "
        "when any of them does not restore."
    )


def describe_test(spec: DatabaseSpec, sample: int = 0) -> str:
    return (
        f"Monthly: drill every retained backup of {spec.name} in every destination (those "
        "`list` shows in a retention tier; the next prune removes the others)"
        + (f", the {sample} oldest of each" if sample else "")
        + ". Fails when any of them does not restore."
    )


def build_all_restore_assets(
    options: KotomiBackupOptions,
) -> tuple[list[AssetsDefinition], list[AssetsDefinition]]:
    """(drills, tests) of every database: built for the first, copied for the others."""
    first, *others = options.databases
    drill, test = build_restore_assets(first, options)
    sample = options.restore_test_sample
    drills, tests = [drill], [test]
    for spec in others:
        drills.append(replicate_asset(drill, first, spec, describe_drill, group_of(spec)))
        tests.append(
            replicate_asset(test, first, spec, lambda s: describe_test(s, sample), group_of(spec))
        )
    return drills, tests


def build_restore_assets(
    spec: DatabaseSpec, options: KotomiBackupOptions, resource_key: str = SETTINGS_KEY
) -> list[AssetsDefinition]:
    drill_key = AssetKey([spec.name, "restore_drill"])
    test_key = AssetKey([spec.name, "restore_test"])
    by_name = {s.name: s for s in options.databases} | {spec.name: spec}
    group, keys, pool, owners = group_of(spec), {resource_key}, spec.pool, list(options.owners)
    deps, kinds = [AssetKey([spec.name, "upload"])], {"sqlite", *options.destination_kinds}
    sample = options.restore_test_sample

    @asset(
        key=drill_key,
        check_specs=_drill_checks(drill_key),
        freshness_policy=drill_freshness(options),
        description=describe_drill(spec),
        group_name=group,
        required_resource_keys=keys,
        deps=deps,
        pool=pool,
        owners=owners,
        kinds=kinds,
    )
    def restore_drill(context: AssetExecutionContext):  # type: ignore[no-untyped-def]  # a generator Dagster reads
        db = by_name[context.asset_key.path[0]]
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        yield from _drills_materialized(context, res, db, "drill", "latest", _drill_summary)

    @asset(
        key=test_key,
        check_specs=_drill_checks(test_key),
        description=describe_test(spec, sample),
        group_name=group,
        required_resource_keys={resource_key, RETENTION_KEY},  # the tiers `list` shows
        deps=deps,
        pool=pool,
        owners=owners,
        kinds=kinds,
    )
    def restore_test(context: AssetExecutionContext):  # type: ignore[no-untyped-def]  # a generator Dagster reads
        db = by_name[context.asset_key.path[0]]
        res: KotomiBackupResource = getattr(context.resources, resource_key)
        retention: RetentionPolicyResource = getattr(context.resources, RETENTION_KEY)
        which = f"oldest:{sample}" if sample > 0 else "all"
        with one_line_failures(f"restore test of {db.name}"):
            try:
                policy = retention.policy()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        yield from _drills_materialized(
            context, res, db, "restore test", which, _test_summary, policy
        )

    return [restore_drill, restore_test]
