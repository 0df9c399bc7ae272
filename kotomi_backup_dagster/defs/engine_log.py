"""The engine's own log lines in a step's event log: each store retry with the wait before it,
each destination's upload, and the progress of long stages.

The engine imports no Dagster: it logs to the standard `logging` loggers under
`kotomi_backup_dagster` (stores/retry.py, backup.py, paged/publish.py), where the CLI leaves
them on stderr. While a step runs, `engine_log_in(context.log)` forwards every line at INFO
or above to the step's log, so the UI shows them between STEP_START and the step's end
instead of only in the stderr tab. `progress_lines` turns a stage's byte counts into a line
every tenth of the way (at least every MiB).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from ..engine.readable import readable_size
from ..engine.redaction import redact

ENGINE_LOGGER = "kotomi_backup_dagster"
MiB = 1 << 20


class _ToStepLog(logging.Handler):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log.log(record.levelno, redact(record.getMessage()))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def engine_log_in(log: logging.Logger) -> Iterator[None]:
    """Forward the engine's lines (INFO and above) to `log`, a step's `context.log`, while
    the block runs. Steps of one process run one at a time (the in-process executor)."""
    logger = logging.getLogger(ENGINE_LOGGER)
    handler = _ToStepLog(log)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def progress_lines(log: logging.Logger, what: str, total: int | None) -> Callable[[int], None]:
    """A stage's `progress` callback (bytes done, in increments) that logs
    `<what>: 120.0 MiB of 1.0 GiB (12%)` each time another tenth (at least a MiB) is done."""
    step = max((total or 0) // 10, MiB)
    done = 0
    next_line = step

    def advance(n: int) -> None:
        nonlocal done, next_line
        done += n
        if done < next_line:
            return
        while next_line <= done:
            next_line += step
        if total:
            share = min(100, done * 100 // total)
            log.info(f"{what}: {readable_size(done)} of {readable_size(total)} ({share}%)")
        else:
            log.info(f"{what}: {readable_size(done)}")

    return advance
