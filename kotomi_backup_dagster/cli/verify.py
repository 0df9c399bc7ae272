"""`kotomi-backup verify`: check a database file, an archive or a backup folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.settings import BackupSettings
from .arguments import add_json_and_debug
from .output import EXIT_FAILED, EXIT_OK, emit_json, err, out


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "verify", help="check a database file, an archive or a backup directory"
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--full", action="store_true", help="integrity_check instead of quick_check")
    add_json_and_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.verify_path import verify_path

    settings = BackupSettings.from_env()
    result = verify_path(
        Path(args.path).expanduser(),
        mode="full" if args.full else "quick",
        identity=settings.age_identity,
        profile=settings.profile,
    )
    if args.json:
        emit_json(result.to_dict())
    else:
        stream = out if result.ok else err
        for line in result.lines():
            stream.print(line)
    return EXIT_OK if result.ok else EXIT_FAILED
