"""`restore_job`: a restore launched from the Launchpad, one visible step per stage.

    choose_backup -> fetch_backup (download, sha256, decrypt, decompress) -> check_backup
                  -> swap_in (keep a copy, drop stale -wal/-shm, rename)

Config picks the database, the backup (`latest`, an id, or the newest before a time), the
target file (default: the database's own path), whether to keep a copy, and `force`.

The Launchpad has no login of its own, so what a run may write is narrow: the database's own
file, or a new file in its folder (or in `KOTOMI_BACKUP_RESTORE_DIR`), nothing else. On top
of the engine's rule (restore_target.py: only a SQLite database is ever replaced, never a
symlink, a device, a folder...), `launchpad_target` adds that folder rule and the `confirm`
that replacing an existing database needs. Both are applied when the backup is chosen, before
any download, and again by the swap, the step that writes.
"""

import hashlib
import os
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

from ...engine import config
from ...engine.errors import ConfigError
from ...engine.manifest import Manifest
from ...engine.restore import (
    Chosen,
    check_restored,
    choose_backup,
    fetch_backup,
    parse_time,
    restoring_into,
    staged_restore_path,
    swap_in,
)
from ...engine.restore_target import RestoreTarget, check_target, same_folder
from ...engine.settings import BackupSettings
from ...engine.stores import safe_url
from ..backup.assets import SETTINGS_KEY
from ..backup.resources import KotomiBackupResource
from ..databases import RESTORE_JOB, DatabaseSpec
from ..failures import failure, one_line_failures
from ..options import KotomiBackupOptions
from ..scheduling import busy_databases


def restore_config_schema(databases: list[DatabaseSpec]) -> dict[str, Field]:
    """The Launchpad's form: the configured databases as choices (each with its path), the
    rest as before, and `confirm`."""
    names = [spec.name for spec in databases]
    # Dagster keeps config types by name: one name per set of databases.
    digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
    return {
        "database": Field(
            Enum(
                f"KotomiDatabase_{digest}",
                [EnumValue(spec.name, description=_where(spec)) for spec in databases],
            ),
            default_value=names[0],
            description="Which configured database to restore: "
            + ", ".join(f"{spec.name} ({_where(spec)})" for spec in databases)
            + ".",
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
            Noneable(str),  # null, as before: the database's own file
            default_value="",
            description="Empty: the database's own file (replacing it needs `confirm`). "
            "Else a NEW file: a bare name is created beside the database; a path must be in "
            "the database's folder or in KOTOMI_BACKUP_RESTORE_DIR.",
        ),
        "confirm": Field(
            str,
            default_value="",
            description="To replace the live database, its name (as in `database`) or its "
            "path; a new file needs none.",
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


def _where(spec: DatabaseSpec) -> str:
    return spec.db_path or f"${config.DB_PATH.name}"


def launchpad_target(
    database: str, db: Path, target_path: str | None, confirm: str
) -> RestoreTarget:
    """Where a run from the Launchpad may restore `database` (its file `db`): the file
    itself (an existing one only with `confirm`), or a new file in its folder or in
    KOTOMI_BACKUP_RESTORE_DIR. The engine's `check_target` refuses what is no database."""
    path = Path(target_path).expanduser() if target_path else db
    if not path.is_absolute():
        path = db.parent / path  # a bare name: beside the database
    restore_dir = config.RESTORE_DIR.read()
    folders = [db.parent, *([restore_dir] if restore_dir else [])]
    # Short: a headline is cut at 300 characters, and the config shows what was given.
    outside = ConfigError(
        f"target_path is outside {database}'s folder {db.parent}"
        + (
            f" and {config.RESTORE_DIR.name} ({restore_dir}): the Launchpad writes only the "
            "database itself or a new file there"
            if restore_dir
            else ": the Launchpad writes only the database itself or a new file there "
            f"({config.RESTORE_DIR.name} can name one more folder)"
        )
    )
    if not any(_same_dir(path.parent, folder) for folder in folders):
        raise outside  # before anything looks at what is there
    checked = check_target(path)
    if not any(same_folder(checked, folder) for folder in folders):
        raise outside  # the folder changed meanwhile
    if same_folder(checked, db.parent) and checked.path.name == db.name:
        accepted = {database, str(db), str(path), str(checked.path)}
        if checked.replaces and confirm.strip() not in accepted:
            raise ConfigError(
                f"{checked.path} is {database}'s live database: to replace it, set confirm: "
                f"{database}; or set target_path to a new file's name, to restore beside it"
            )
        return checked
    if checked.replaces:
        raise ConfigError(
            f"target_path {checked.path} exists and is not {database}'s database: the Launchpad "
            f"replaces only {db}; give a new file's name"
        )
    return checked


def _same_dir(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@dataclass(frozen=True)
class RestorePlan:
    """What the later steps need: small and picklable (stores are reopened from the URL)."""

    database: str
    url: str
    manifest_json: bytes
    target: str  # as checked: the folder's real path and the file's name
    target_path: str  # as given in the config, checked again by the swap
    confirm: str
    keep_copy: bool
    force: bool
    profile: str

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_json(self.manifest_json)

    @property
    def staged(self) -> Path:
        return staged_restore_path(Path(self.target), self.manifest.backup_id)


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
        config_schema=restore_config_schema(list(options.databases)),
        description="Check the target; pick the backup (latest, an id, or the newest before "
        "a time).",
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
            target = launchpad_target(
                database, settings.require_db(), config["target_path"], config["confirm"]
            )
            before = parse_time(config["before"]) if config["before"] else None
            chosen = choose_backup(res.stores(), settings.name, config["backup"], before)
        m = chosen.manifest
        context.add_output_metadata(
            {
                "backup_id": m.backup_id,
                "created_at": m.created_at,
                "source": safe_url(chosen.store.url),
                "target": str(target.path),
                "will": target.what,
                "db_bytes": m.db_size,
            }
        )
        return RestorePlan(
            database=database,
            url=chosen.store.url,
            manifest_json=m.to_json(),
            target=str(target.path),
            target_path=config["target_path"] or "",
            confirm=config["confirm"],
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
        with one_line_failures(f"restore of {plan.database}"), restoring_into(Path(plan.target)):
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
            with (
                one_line_failures(f"restore of {plan.database}"),
                restoring_into(Path(plan.target), sweep=False),
            ):
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
        required_resource_keys=keys,
        ins={"plan": In(RestorePlan)},
        description="Check the target again; keep a copy of the current file, drop stale "
        "-wal/-shm, rename into place.",
    )
    def swap_in_restored(context: OpExecutionContext, plan: RestorePlan) -> None:
        _, settings = resource_for(context, plan.database)
        with one_line_failures(f"restore of {plan.database}"):
            # What was checked when the backup was chosen may have changed since.
            target = launchpad_target(
                plan.database, settings.require_db(), plan.target_path, plan.confirm
            )
            if str(target.path) != plan.target:
                raise ConfigError(
                    f"{plan.target} is no longer where target_path leads ({target.path}); "
                    "nothing was replaced: launch the restore again"
                )
            with restoring_into(target.path, sweep=False):
                result = swap_in(
                    plan.staged,
                    target.path,
                    keep_copy=plan.keep_copy,
                    force=plan.force,
                    checked=target,
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
            "Restore a backup of one database: into its live file (with confirm: <database>) "
            "or a new file beside it (target_path). Choose, fetch and verify, check, swap in. "
            "Stop Kotomi first; the current file is kept."
        ),
    )
    def restore_job() -> None:
        swap_in_restored(check_restored_copy(fetch_backup_archive(choose_backup_to_restore())))

    return restore_job
