"""`kotomi-backup restore`: a backup over (or into) a database file, checked before it is
swapped in."""

from __future__ import annotations

import argparse

from ..engine import config
from ..engine.errors import ConfigError
from .arguments import add_common, settings_from
from .output import EXIT_OK, byte_progress, emit_json, err, out

# What a Ctrl-C leaves, said when one stops this command.
INTERRUPTED = "the database was not replaced (a restore swaps it in only as its last step)"


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("restore", help="restore a backup over (or into) a database file")
    p.add_argument("backup", metavar="ID|latest", help="a backup id, or latest")
    p.add_argument(
        "--db",
        metavar="PATH",
        help=config.DB_PATH.flag_help("the database file to replace, or a new file"),
    )
    p.add_argument("--before", metavar="RFC3339", help="the newest backup created before this")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore even if the database is open (never over a file that is not a database)",
    )
    p.add_argument(
        "--verify",
        choices=("auto", "full"),
        default="auto",
        help="auto (default): a quick_check when these bytes passed a full integrity_check "
        "before (backup with --verify full, or a passing drill), else integrity_check; "
        "full: always integrity_check",
    )
    p.add_argument(
        "--no-keep",
        action="store_true",
        help="do not keep the current database as <db>.before-restore-<time>",
    )
    add_common(p, "--from")
    p.set_defaults(func=run, interrupted=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from ..engine.restore import parse_time, restore_database
    from ..engine.stores import open_store, safe_url

    settings = settings_from(args)
    # Not resolved: a symlink at the name is refused by the engine, never followed.
    target = settings.require_db().expanduser()
    before = parse_time(args.before) if args.before else None
    if before is not None and args.backup != "latest":
        raise ConfigError("give either a backup id or --before TIME, not both")
    stores = [open_store(u) for u in settings.require_urls()]
    with byte_progress("restore", None, not args.json) as progress:
        result = restore_database(
            stores,
            settings.name,
            target,
            which=args.backup,
            before=before,
            identities=settings.identities(),
            keep_copy=not args.no_keep,
            force=args.force,
            profile=settings.profile,
            progress=progress,
            force_full_check=args.verify == "full",
        )
    m = result.manifest
    for skipped in result.skipped:
        err.print(
            f"kotomi-backup: warning: skipped a newer backup, its manifest is unreadable: {skipped}"
        )
    if args.json:
        emit_json(
            {
                "backup_id": m.backup_id,
                "skipped_unreadable": list(result.skipped),
                "source": safe_url(result.source_url),
                "target": str(result.target),
                "kept_copy": str(result.kept_copy) if result.kept_copy else None,
                "removed": result.removed,
                "db_sha256": m.db_sha256,
                "tables": result.report.tables,
                "check": {"mode": result.check.mode, "why": result.check.why},
                "seconds": round(result.seconds, 3),
            }
        )
        return EXIT_OK
    pragma = "integrity_check" if result.check.mode == "full" else "quick_check"
    out.print(f"restored {m.backup_id} ({m.created_at}) from {safe_url(result.source_url)}")
    out.print(f"  into {result.target}: sha256 matches the manifest, {pragma} ok, row counts match")
    out.print(f"  {pragma}: {result.check.why}")
    if result.kept_copy:
        out.print(f"  the previous database is kept as {result.kept_copy}")
    if result.removed:
        out.print(f"  removed stale {', '.join(result.removed)}")
    out.print("  start Kotomi again and check: curl -fsS localhost:8080/healthz")
    return EXIT_OK
