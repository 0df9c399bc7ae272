"""Which staged backup a backup stage works on, named by the backup id in the upstream asset's
materialization (nothing is pickled between stages).

1. The upstream stage ran in this run, or in a run this one re-executes (Dagster's
   "Re-execute from failure" follows `parent_run_id`): that materialization's `backup_id`.
   A later scheduled run in between changes nothing: the id is the failed run's own.
2. The stage runs alone (UI "Materialize" on one asset, "Execute" on one check): the newest
   staged backup that still needs this stage (engine/pending.py), or a `Failure` that says in
   one sentence what to run first.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterLogManager,
    DagsterRun,
    Failure,
)

from ...engine.backup import StagedBackup
from ...engine.errors import BackupError
from ...engine.pending import Stage, newest_needing, nothing_to_do
from ...engine.settings import BackupSettings

BACKUP_ID = "backup_id"
MAX_ANCESTORS = 50  # re-executions of re-executions: far more than anyone clicks


def upstream_backup_id(instance: DagsterInstance, run: DagsterRun, key: AssetKey) -> str | None:
    """The backup id `key` materialized in this run or the nearest run it re-executes."""
    run_id: str | None = run.run_id
    for _ in range(MAX_ANCESTORS):
        if run_id is None:
            return None
        records = instance.get_records_for_run(
            run_id=run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        ).records
        for record in reversed(records):  # the newest first
            mat = record.asset_materialization
            if mat is not None and mat.asset_key == key and BACKUP_ID in mat.metadata:
                return str(mat.metadata[BACKUP_ID].value)
        parent = instance.get_run_by_id(run_id) if run_id != run.run_id else run
        run_id = parent.parent_run_id if parent is not None else None
    return None


def staged_backup_for(
    instance: DagsterInstance,
    run: DagsterRun,
    upstream: AssetKey,
    settings: BackupSettings,
    stage: Stage,
    log: DagsterLogManager | None = None,
) -> StagedBackup:
    """The staged backup `stage` works on (see the module's docstring)."""
    backup_id = upstream_backup_id(instance, run, upstream)
    if backup_id is not None:
        try:
            return StagedBackup.open(settings.staging_dir, settings.name, backup_id)
        except BackupError as exc:
            raise Failure(description=str(exc), allow_retries=False) from None
    staged = newest_needing(settings.staging_dir, settings.name, stage)
    if staged is None:
        raise Failure(
            description=nothing_to_do(settings.staging_dir, settings.name, stage),
            allow_retries=False,
        )
    if log is not None:
        log.info(
            f"{upstream.to_user_string()} did not run in this run: {stage} of the newest staged "
            f"backup that needs it, {staged.backup_id}"
        )
    return staged
