"""Failed steps whose headline is the cause: the engine's one-line error as a Dagster `Failure`.

Dagster shows a step's error first. An engine error left alone appears as "Error occurred
while executing op ..." (Dagster's wrapper) with the cause under a stack trace, and a step
out of retries as "Exceeded max_retries of N". A `Failure` raised with the engine's line is
shown as that line; the traceback stays below it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Failure

from ..engine.errors import BackupError, ConfigError, first_line
from ..engine.redaction import redact


def failure(
    message: str, *, retry: bool = False, metadata: dict[str, Any] | None = None
) -> Failure:
    """A `Failure` whose headline is `message`'s first line, without any secret (whole up to
    a long limit: a failed upload's line ends with what to check)."""
    return Failure(
        description=redact(first_line(message, limit=HEADLINE_LIMIT)),
        allow_retries=retry,
        metadata=metadata,
    )


HEADLINE_LIMIT = 1000


class RedactedCause(Exception):
    """What an error other than the engine's said, traceback included, with secrets removed:
    Dagster shows a step's cause chain in the event log and the UI."""

    @classmethod
    def of(cls, exc: BaseException) -> RedactedCause:
        return cls(redact("".join(traceback.format_exception(exc)).rstrip()))


@contextmanager
def one_line_failures(what: str = "", *, retry: bool = False) -> Iterator[None]:
    """Turn the engine's errors (and the OS's, e.g. a full disk) into a `Failure` whose
    description is one line, prefixed by `what` (e.g. "drill of kotomi"). `retry`: whether a
    retry policy may run the step again (never for a configuration error)."""
    prefix = f"{what}: " if what else ""
    try:
        yield
    except Failure:
        raise
    except ConfigError as exc:
        raise failure(f"{prefix}{exc}") from exc
    except BackupError as exc:  # its message was redacted when it was made
        raise failure(f"{prefix}{exc}", retry=retry) from exc
    except OSError as exc:
        cause = RedactedCause.of(exc)
        raise failure(f"{prefix}{type(exc).__name__}: {exc}", retry=retry) from cause


def retries_left(retry_number: int, max_retries: int) -> bool:
    """Whether the step's retry policy will run it again after this attempt: on the last
    attempt a `Failure` must say so, or Dagster's "Exceeded max_retries" becomes the headline."""
    return retry_number < max_retries
