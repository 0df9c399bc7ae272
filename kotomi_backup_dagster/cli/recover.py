"""`kotomi-backup recover`: salvage the readable rows of a corrupt database."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from .arguments import add_json_and_debug
from .output import EXIT_OK, emit_json, out


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("recover", help="salvage the readable rows of a corrupt database")
    p.add_argument("broken", metavar="BROKEN_DB")
    p.add_argument("out", metavar="OUT_DB")
    add_json_and_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.recover import recover_database

    report = recover_database(Path(args.broken).expanduser(), Path(args.out).expanduser())
    if args.json:
        emit_json(
            {
                "out": str(report.out),
                "method": report.method,
                "saved_rows": report.saved,
                "tables": {n: asdict(t) for n, t in report.tables.items()},
                "notes": report.notes,
            }
        )
        return EXIT_OK
    table = Table(title=f"salvaged into {report.out} ({report.method})", title_justify="left")
    for col in ("table", "rows saved", "unreadable ranges", "first error"):
        table.add_column(col)
    for t in report.tables.values():
        table.add_row(t.name, str(t.saved), str(t.errors), t.first_error or "")
    out.print(table)
    for note in report.notes:
        out.print(f"  {note}")
    out.print("  check it before use: kotomi-backup verify " + str(report.out) + " --full")
    return EXIT_OK
