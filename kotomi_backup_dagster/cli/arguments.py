"""What every command's arguments share: one-line usage errors, the destination, name, --json
and --debug flags, and the settings they make with the environment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..engine import config
from ..engine.settings import BackupSettings
from .output import EXIT_USAGE, error_line


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors, one line with the prefix of ours.
        error_line(f"{message} (see kotomi-backup --help)")
        raise SystemExit(EXIT_USAGE)


def add_common(p: argparse.ArgumentParser, url_flag: str | None) -> None:
    """The destination flag (`--to` or `--from`, if any), --name, --json and --debug."""
    if url_flag:
        p.add_argument(
            url_flag,
            dest=url_flag.strip("-").replace("from", "from_"),
            metavar="URL",
            help=config.URL.flag_help("destination(s), comma-separated"),
        )
    p.add_argument("--name", help=config.NAME.flag_help("backup name"))
    add_json_and_debug(p)


def add_json_and_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    # SUPPRESS: a subcommand's default must not undo `kotomi-backup --debug backup`.
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print tracebacks on failure",
    )


def deadline_seconds(text: str) -> float | None:
    try:
        return config.DEADLINE.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def settings_from(args: argparse.Namespace, **extra: Any) -> BackupSettings:
    """The environment's settings, with what the command line gave in their place."""
    from ..engine.stores import split_urls

    url = getattr(args, "to", None) or getattr(args, "from_", None)
    return BackupSettings.from_env(
        db_path=Path(args.db).expanduser() if getattr(args, "db", None) else None,
        urls=tuple(split_urls(url)) if url else None,
        name=getattr(args, "name", None),
        **extra,
    )
