"""`kotomi-backup demo`: make a demo Kotomi database and back it up."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.readable import readable_size
from ..engine.settings import BackupSettings
from .arguments import add_json_and_debug
from .output import EXIT_OK, emit_json, err, out


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("demo", help="make a demo Kotomi database and back it up")
    p.add_argument("--dir", default="kotomi-demo", help="where (default: ./kotomi-demo)")
    p.add_argument("--size-mb", type=int, default=5, help="demo database size (default 5 MB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db-only", action="store_true", help="only make the database, no backup")
    add_json_and_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import generate_demo_database
    from ..engine.backup import run_backup

    directory = Path(args.dir).expanduser().resolve()
    db = directory / "kotomi.db"
    backups = directory / "backups"
    if db.exists():
        err.print(f"using the existing demo database {db}")
    else:
        directory.mkdir(parents=True, exist_ok=True)
        generate_demo_database(db, size_bytes=args.size_mb * 1_000_000, seed=args.seed)
    if args.db_only:
        out.print(f"demo database: {db}")
        return EXIT_OK
    settings = BackupSettings.from_env(
        db_path=db, urls=(str(backups),), name="kotomi", staging_dir=directory / "staging"
    )
    result = run_backup(settings)
    m = result.manifest
    if args.json:
        emit_json(
            {
                "db": str(db),
                "backups": str(backups),
                "backup_id": m.backup_id,
                "manifest": json.loads(m.to_json()),
            }
        )
        return EXIT_OK
    out.print(f"demo database: {db} ({readable_size(m.db_size)}, {sum(m.tables.values())} rows)")
    out.print(f"backup {m.backup_id}: {backups / m.archive.key}")
    out.print(f"list it:    kotomi-backup list --to {backups}")
    out.print(f"restore it: zstd -d < {backups / m.archive.key} > restored.db")
    return EXIT_OK
