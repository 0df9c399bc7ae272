"""`kotomi-backup backup`: snapshot, verify, compress (+encrypt) and upload."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..engine import config
from ..engine.readable import readable_size
from .arguments import add_common, deadline_seconds, settings_from
from .output import EXIT_OK, byte_progress, emit_json, out

# What a Ctrl-C leaves, said when one stops this command.
INTERRUPTED = "nothing was listed as a backup"


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("backup", help="snapshot, verify, compress (+encrypt) and upload")
    p.add_argument("--db", metavar="PATH", help=config.DB_PATH.flag_help("database file"))
    p.add_argument(
        "--verify",
        choices=config.VERIFY.choices,
        default=None,
        help=config.VERIFY.flag_help("quick_check or full integrity_check"),
    )
    p.add_argument(
        "--format",
        choices=config.FORMAT.choices,
        default=None,
        help=config.FORMAT.flag_help("full archive or paged: only pages the destination lacks"),
    )
    p.add_argument(
        "--deadline",
        type=deadline_seconds,
        default=None,
        metavar="SECONDS",
        help=config.DEADLINE.flag_help(
            "give up on the destinations once the backup has run this long"
        ),
    )
    add_common(p, "--to")
    p.set_defaults(func=run, interrupted=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from ..engine.backup import run_backup
    from ..engine.keeper.guard import KeeperSettings
    from ..engine.keeper.roles import require_role

    require_role(KeeperSettings.from_env(), "backup")
    settings = settings_from(
        args, verify_mode=args.verify, backup_format=args.format, deadline=args.deadline
    )
    db = settings.require_db()
    size = db.stat().st_size if db.exists() else 0
    with byte_progress("archive", size, not args.json) as progress:
        result = run_backup(settings, progress=progress)
    m = result.manifest
    if args.json:
        emit_json(
            {
                "backup_id": m.backup_id,
                "name": m.name,
                "manifest": json.loads(m.to_json()),
                "destinations": [asdict(o) for o in result.outcomes],
                "snapshot_method": result.snapshot.method,
                "seconds": {
                    "snapshot": round(result.snapshot.seconds, 3),
                    "verify": round(result.verify.seconds, 3),
                    "archive": round(result.archive_seconds, 3),
                },
            }
        )
        return EXIT_OK
    if m.is_paged:
        out.print(
            f"backup {m.backup_id} of {m.name}: {readable_size(m.db_size)}, paged "
            f"(encryption {m.archive.encryption})"
        )
    else:
        out.print(
            f"backup {m.backup_id} of {m.name}: {readable_size(m.db_size)} -> "
            f"{readable_size(m.archive.size)} ({m.archive.compression}, "
            f"encryption {m.archive.encryption})"
        )
    out.print(f"  verify: {result.verify.summary()}")
    for o in result.outcomes:
        if o.already_there:
            out.print(f"  already at {o.url}")
        elif m.is_paged and o.manifest is not None:
            paged = o.manifest.paged or {}
            base = paged.get("base") or "none, every page stored"
            out.print(
                f"  stored at {o.url}: {paged.get('new_pages', 0)} new pages in "
                f"{len(paged.get('new_packs', []))} pack(s), {readable_size(o.bytes)} (base {base})"
            )
        else:
            out.print(f"  stored at {o.url}/{m.archive.key}")
    return EXIT_OK
