"""`restore_job`: a restore launched from the Launchpad, one visible step per stage.

    choose_backup -> fetch_backup (download, sha256, decrypt, decompress) -> check_backup
                  -> swap_in (keep a copy, drop stale -wal/-shm, rename)

Config picks the database, the backup (`latest`, an id, or the newest before a time), the
target file (default: the database's own path), whether to keep a copy, and `force`.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    Enum,
    EnumValue,
    Failure,
    Field,
    In,
    JobDefinition,
    Noneable,
    OpExecutionContext,
    Out,
    in_process_executor,
    job,
    op,
)

from ...engine.manifest import Manifest
from ...engine.restore import (
    Chosen,
    check_restored,
    choose_backup,
    fetch_backup,
    parse_time,
    swap_in,
)
from ...engine.settings import BackupSettings
from ...engine.stores import safe_url
from ..backup.assets import SETTINGS_KEY
from ..backup.resources import KotomiBackupResource
from ..databases import RESTORE_JOB
from ..failures import failure, one_line_failures
from ..options import KotomiBackupOptions
from ..scheduling import busy_databases


def restore_config_schema(names: list[str]) -> dict[str, Field]:
    """The Launchpad's form: the configured databases as choices, the rest as before."""
    # Dagster keeps config types by name: one name per set of databases.
    digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
    return {
        "database": Field(
            Enum(f"KotomiDatabase_{digest}", [EnumValue(n) for n in names]),
            default_value=names[0],
            description="Which configured database to restore.",
        ),
        "backup": Field(
            str,
            default_value="latest",
            description="`latest` or a backup id (the `backup_catalog` asset of the database "
            "lists them, with their time, size and last drill).",
        ),
        "before": Field(
            Noneable(str),
            default_value=None,
            description="RFC 3339: restore the newest backup created before this.",
        ),
        "target_path": Field(
            Noneable(str),
            default_value=None,
            description="File to restore into (default: the database's own path).",
        ),
        "keep_copy": Field(
            bool,
            default_value=True,
            description="Keep the current file as <db>.before-restore-<time>.",
        ),
        "force": Field(
            bool,
            default_value=False,
            description="Restore even while another process has the database open.",
        ),
    }


@dataclass(frozen=True)
class RestorePlan:
    """What the later steps need: small and picklable (stores are reopened from the URL)."""

    database: str
    url: str
    manifest_json: bytes
    target: str
    keep_copy: bool
    force: bool
    profile: str

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_json(self.manifest_json)

    @property
    def staged(self) -> Path:
        target = Path(self.target)
        return target.with_name(f".{target.name}.restore-{self.manifest.backup_id}")


def build_restore_job(options: KotomiBackupOptions) -> JobDefinition:
    by_name = {s.name: s for s in options.databases}
    keys = {SETTINGS_KEY}

    def resource_for(
        context: OpExecutionContext, database: str
    ) -> tuple[KotomiBackupResource, BackupSettings]:
        if database not in by_name:
            raise failure(f"unknown database {database!r}: configured are {', '.join(by_name)}")
        res: KotomiBackupResource = getattr(context.resources, SETTINGS_KEY)
        with one_line_failures(f"restore of {database}"):
            return res, res.settings(by_name[database])

    @op(
        required_resource_keys=keys,
        out=Out(RestorePlan),
        config_schema=restore_config_schema(list(by_name)),
        description="Pick the backup (latest, an id, or the newest before a time).",
    )
    def choose_backup_to_restore(context: OpExecutionContext) -> RestorePlan:
        config = context.op_config
        database = config["database"]
        # Runs queued behind this one are no competition: the queue holds them until it ends
        # (a prune the sensor asked for just after the restore was launched failed it).
        running = busy_databases(context.instance, exclude_run=context.run_id, queued=False)
        busy = running.get(database)
        if busy:
            raise failure(
                f"{database} is busy: {busy} is in progress; launch the restore again when it "
                "has finished"
            )
        res, settings = resource_for(context, database)
        with one_line_failures(f"restore of {database}"):
            before = parse_time(config["before"]) if config["before"] else None
            chosen = choose_backup(res.stores(), settings.name, config["backup"], before)
            target = (
                Path(config["target_path"]).expanduser()
                if config["target_path"]
                else settings.require_db()
            )
        m = chosen.manifest
        context.add_output_metadata(
            {
                "backup_id": m.backup_id,
                "created_at": m.created_at,
                "source": safe_url(chosen.store.url),
                "target": str(target),
                "db_bytes": m.db_size,
            }
        )
        return RestorePlan(
            database=database,
            url=chosen.store.url,
            manifest_json=m.to_json(),
            target=str(target),
            keep_copy=config["keep_copy"],
            force=config["force"],
            profile=settings.profile,
        )

    @op(
        required_resource_keys=keys,
        ins={"plan": In(RestorePlan)},
        out=Out(RestorePlan),
        description="Download; check the archive's and the database's sha256; decrypt; inflate.",
    )
    def fetch_backup_archive(context: OpExecutionContext, plan: RestorePlan) -> RestorePlan:
        res, settings = resource_for(context, plan.database)
        with one_line_failures(f"restore of {plan.database}"):
            fetch_backup(
                Chosen(res.store(plan.url), plan.manifest),
                plan.staged,
                identities=settings.identities(),
            )
        context.add_output_metadata(
            {"staged": str(plan.staged), "db_sha256": plan.manifest.db_sha256}
        )
        return plan

    @op(
        ins={"plan": In(RestorePlan)},
        out=Out(RestorePlan),
        description="integrity_check and every table's row count against the manifest.",
    )
    def check_restored_copy(context: OpExecutionContext, plan: RestorePlan) -> RestorePlan:
        try:
            with one_line_failures(f"restore of {plan.database}"):
                report = check_restored(plan.staged, plan.manifest, plan.profile)  # type: ignore[arg-type]
        except Failure:
            plan.staged.unlink(missing_ok=True)
            raise
        context.add_output_metadata(
            {
                "integrity": "ok",
                "total_rows": sum(report.tables.values()),
                "seconds": round(report.seconds, 3),
            }
        )
        return plan

    @op(
        ins={"plan": In(RestorePlan)},
        description="Keep a copy of the current file, drop stale -wal/-shm, rename into place.",
    )
    def swap_in_restored(context: OpExecutionContext, plan: RestorePlan) -> None:
        with one_line_failures(f"restore of {plan.database}"):
            result = swap_in(
                plan.staged, Path(plan.target), keep_copy=plan.keep_copy, force=plan.force
            )
        context.add_output_metadata(
            {
                "target": str(result.target),
                "kept_copy": str(result.kept_copy) if result.kept_copy else "none",
                "removed": ", ".join(result.removed) or "none",
            }
        )
        context.log.info(
            f"restored {plan.manifest.backup_id} into {result.target}; "
            "start Kotomi and check /healthz"
        )

    @job(
        name=RESTORE_JOB,
        executor_def=in_process_executor,
        tags={"kotomi_backup/area": "restore"},
        description=(
            "Restore a backup of one database into its live file (or target_path): choose, fetch "
            "and verify, check, swap in. Stop Kotomi first; the current file is kept."
        ),
    )
    def restore_job() -> None:
        swap_in_restored(check_restored_copy(fetch_backup_archive(choose_backup_to_restore())))

    return restore_job
