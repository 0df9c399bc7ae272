"""What a command writes: the console for people, JSON for machines, exit codes, and the
one form of a line on stderr (`kotomi-backup: error: ...`, `kotomi-backup: warning: ...`).

Tables fit the width COLUMNS gives (else the terminal's); piped output without it is not
cut to 80 columns (backup ids and URLs must stay whole). Everything written passes
through the redacting streams `main` installs (`cli/main.py`)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C

# COLUMNS wins, as for any console program; a terminal's own width next; a pipe without
# COLUMNS gets 200, so a backup id or a URL is never cut at 80.
_COLUMNS = os.environ.get("COLUMNS", "")
out = Console(
    highlight=False,
    soft_wrap=True,
    width=None if sys.stdout.isatty() or _COLUMNS.isdigit() else 200,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def error_line(text: str) -> None:
    """A failure on stderr, with the one prefix every command's failures have."""
    sys.stderr.write(f"kotomi-backup: error: {text}\n")


def warning_line(text: str) -> None:
    """Something to know that did not stop the command (a store retried, a setting ignored)."""
    sys.stderr.write(f"kotomi-backup: warning: {text}\n")


class EngineLines(logging.Handler):
    """The engine's warnings (a store's retries, each with the wait before it) as warning
    lines: without it Python's last-resort handler printed them bare, with no prefix."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            warning_line(record.getMessage())
        except Exception:
            self.handleError(record)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def byte_progress(
    label: str, total: int | None, enabled: bool
) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
