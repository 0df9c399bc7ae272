"""`kotomi-backup drill`: restore into scratch space and check, recording the drill at the
destination."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from rich.table import Table

from .arguments import add_common, settings_from
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_json, error_line, out

# What a Ctrl-C leaves, said when one stops this command.
INTERRUPTED = "no drill was recorded for the backup being drilled"


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "drill", help="restore into scratch space and check, recording the drill"
    )
    p.add_argument("backup", metavar="ID|latest|all", nargs="?", default="latest")
    add_common(p, "--from")
    p.set_defaults(func=run, interrupted=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from ..engine.destinations import at_each_destination, misconfigured
    from ..engine.drill import drill_store
    from ..engine.keeper.guard import KeeperSettings
    from ..engine.keeper.roles import require_role

    require_role(KeeperSettings.from_env(), "drill")
    settings = settings_from(args)
    identities = settings.identities()
    outcomes = at_each_destination(
        settings.require_urls(),
        lambda store: drill_store(
            store,
            settings.name,
            args.backup,
            identities=identities,
            scratch_dir=settings.staging_dir,
            profile=settings.profile,
        ),
    )
    records: list[dict[str, Any]] = []
    unreachable: list[str] = []
    for at in outcomes:
        if at.error is not None:  # the other destinations are still drilled
            unreachable.append(at.error_line())
            continue
        records += [{"url": at.url, **asdict(record)} for _, record in at.value or []]
    if args.json:
        emit_json({"name": settings.name, "drills": records, "errors": unreachable})
    elif records:  # nothing drilled: only the error lines below (no empty table before them)
        table = Table(title=f"restore drills of {settings.name}", title_justify="left")
        for col in ("destination", "backup id", "result", "RTO (s)", "problems"):
            table.add_column(col)
        for r in records:
            table.add_row(
                r["url"],
                r["backup_id"],
                "ok" if r["ok"] else "FAILED",
                f"{r['rto_seconds']:.2f}",
                "; ".join(r["problems"]),
            )
        out.print(table)
    failed = [r for r in records if not r["ok"]]
    if failed:
        error_line(f"{len(failed)} of {len(records)} drills failed")
    for line in unreachable:
        error_line(f"drill not run at {line}")
    if misconfigured(outcomes):
        return EXIT_USAGE
    return EXIT_FAILED if failed or unreachable else EXIT_OK
