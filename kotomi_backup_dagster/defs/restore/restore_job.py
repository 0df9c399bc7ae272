"""`restore_job`: a restore launched from the Launchpad, one visible step per stage.

    choose_backup -> fetch_backup (download, sha256, decrypt, decompress) -> check_backup
                  -> swap_in (keep a copy, drop stale -wal/-shm, rename)

Config picks the database, the backup (`latest`, an id, or the newest before a time), the
target file (default: the database's own path), whether to keep a copy, and `force`.
"""

from dataclasses import dataclass
from pathlib import Path

from dagster import (
    Config,
    Failure,
    In,
    JobDefinition,
    OpExecutionContext,
    Out,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from ...engine.errors import BackupError
from ...engine.manifest import Manifest
from ...engine.restore import (
    Chosen,
    check_restored,
    choose_backup,
    fetch_backup,
    parse_time,
    swap_in,
)
from ...engine.stores import safe_url
from ..backup.resources import KotomiBackupResource
from ..databases import DatabaseSpec


class RestoreConfig(Config):
    database: str = Field(default="kotomi", description="Which configured database to restore.")
    backup: str = Field(default="latest", description="`latest` or a backup id.")
    before: str | None = Field(
        default=None, description="RFC 3339: restore the newest backup created before this."
    )
    target_path: str | None = Field(
        default=None, description="File to restore into (default: the database's own path)."
    )
    keep_copy: bool = Field(
        default=True, description="Keep the current file as <db>.before-restore-<time>."
    )
    force: bool = Field(
        default=False, description="Restore even while another process has the database open."
    )


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


def build_restore_job(specs: list[DatabaseSpec]) -> JobDefinition:
    by_name = {s.name: s for s in specs}
    keys = {s.resource_key for s in specs}

    def resource_for(context: OpExecutionContext, database: str) -> KotomiBackupResource:
        if database not in by_name:
            raise Failure(f"unknown database {database!r}: configured are {', '.join(by_name)}")
        res: KotomiBackupResource = getattr(context.resources, by_name[database].resource_key)
        return res

    @op(required_resource_keys=keys, out=Out(RestorePlan))
    def choose_backup_to_restore(context: OpExecutionContext, config: RestoreConfig) -> RestorePlan:
        res = resource_for(context, config.database)
        settings = res.settings()
        before = parse_time(config.before) if config.before else None
        chosen = choose_backup(res.stores(), settings.name, config.backup, before)
        target = (
            Path(config.target_path).expanduser() if config.target_path else settings.require_db()
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
            database=config.database,
            url=chosen.store.url,
            manifest_json=m.to_json(),
            target=str(target),
            keep_copy=config.keep_copy,
            force=config.force,
            profile=settings.profile,
        )

    @op(required_resource_keys=keys, ins={"plan": In(RestorePlan)}, out=Out(RestorePlan))
    def fetch_backup_archive(context: OpExecutionContext, plan: RestorePlan) -> RestorePlan:
        res = resource_for(context, plan.database)
        fetch_backup(
            Chosen(res.store(plan.url), plan.manifest),
            plan.staged,
            identities=res.settings().identities(),
        )
        context.add_output_metadata(
            {"staged": str(plan.staged), "db_sha256": plan.manifest.db_sha256}
        )
        return plan

    @op(ins={"plan": In(RestorePlan)}, out=Out(RestorePlan))
    def check_restored_copy(context: OpExecutionContext, plan: RestorePlan) -> RestorePlan:
        try:
            report = check_restored(plan.staged, plan.manifest, plan.profile)  # type: ignore[arg-type]
        except BackupError:
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

    @op(ins={"plan": In(RestorePlan)})
    def swap_in_restored(context: OpExecutionContext, plan: RestorePlan) -> None:
        result = swap_in(plan.staged, Path(plan.target), keep_copy=plan.keep_copy, force=plan.force)
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
        name="restore_job",
        executor_def=in_process_executor,
        description="Restore a backup: choose, fetch and verify, check, swap in.",
    )
    def restore_job() -> None:
        swap_in_restored(check_restored_copy(fetch_backup_archive(choose_backup_to_restore())))

    return restore_job
