"""Parse the command line, run one command, and turn whatever it raised into one line on
stderr and an exit code (cli/__init__.py lists them)."""

from __future__ import annotations

import argparse
import io
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..engine import config, priority
from ..engine.errors import BackupError, ConfigError, DiskFull, first_line, is_no_space
from ..engine.redaction import redact
from . import backup, demo, drill, listing, prune, recover, restore, verify
from .arguments import Parser
from .output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EngineLines,
    error_line,
    warning_line,
)

ENGINE_LOGGER = "kotomi_backup_dagster"  # the engine's loggers (stores/retry.py, backup.py)

COMMANDS = (backup, listing, restore, drill, recover, prune, verify, demo)  # --help's order
# Background work yields to Kotomi (engine/priority.py, KOTOMI_BACKUP_PRIORITY); a restore or a
# salvage is the emergency and keeps normal priority, as do the quick `list` and `demo`.
IN_BACKGROUND = frozenset({"backup", "drill", "prune", "verify"})


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kotomi-backup",
        description="`kotomi-backup`: the engine from the command line, with or without "
        "Dagster running.",
        epilog=config.cli_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kotomi-backup {__version__}")
    parser.add_argument("--debug", action="store_true", help="print tracebacks on failure")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Everything it writes (lines, tables, --json, tracebacks) passes
    through `redact`: no secret leaves the process, whatever went wrong."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Redacting(stdout), _Redacting(stderr)
    engine_log, lines = logging.getLogger(ENGINE_LOGGER), EngineLines()
    engine_log.addHandler(lines)
    try:
        return _run(argv)
    finally:
        engine_log.removeHandler(lines)
        sys.stdout, sys.stderr = stdout, stderr


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for line in config.unknown_variables():
        warning_line(line)
    try:
        if args.command in IN_BACKGROUND:
            _lower_priority()
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except BackupError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return _interrupted(args)
    except OSError as exc:
        if is_no_space(exc):  # a write the engine did not expect to fail: still one line
            return _fail(args, DiskFull(exc.filename or "a local disk"), EXIT_FAILED)
        return _fail(args, exc, EXIT_FAILED, unexpected=True)
    except Exception as exc:
        return _fail(args, exc, EXIT_FAILED, unexpected=True)
    except BaseException as exc:  # a native extension's panic (pyo3) is no Exception
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _interrupted(args)
        return _fail(args, exc, EXIT_FAILED, unexpected=True)


def _lower_priority() -> None:
    """This process runs one command: its main thread is lowered before any work, and every
    thread the work starts inherits that."""
    if config.PRIORITY.read() == "low":
        warning = priority.lower_this_thread().warning()
        if warning:
            sys.stderr.write(f"kotomi-backup: warning: {warning}\n")


def _interrupted(args: argparse.Namespace) -> int:
    what = getattr(args, "interrupted", None)  # set by the commands that change something
    sys.stderr.write(f"kotomi-backup: interrupted{f'; {what}' if what else ''}\n")
    return EXIT_INTERRUPTED


class _Redacting(io.TextIOBase):
    """A text stream that writes what it is given with every secret removed."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._raw.flush()

    def isatty(self) -> bool:
        return self._raw.isatty()

    def fileno(self) -> int:
        return self._raw.fileno()


def _fail(args: argparse.Namespace, exc: BaseException, code: int, unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    # Whole: a long path must not cut "nothing restored, <db> is unchanged" off the end.
    first = first_line(str(exc), limit=sys.maxsize) or type(exc).__name__
    if unexpected:
        first = f"unexpected {type(exc).__name__}: {first} (run with --debug for details)"
    error_line(first)
    return code
