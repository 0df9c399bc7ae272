"""How long a store request may wait: timeouts that follow the work, and one deadline.

A request waits for its answer at most `Timeouts.for_size(n)`: `read` seconds for a small
request (a HEAD, a manifest, one page of a listing), plus `n / min_rate` for one that
carries n bytes (an upload part waits longer than a HEAD, in proportion to its size). A
stalled answer then costs seconds, not the two minutes a fixed read timeout gave every
request (times six attempts).

On top, a deadline (`--deadline`, `KOTOMI_BACKUP_DEADLINE`, the Dagster resource's
`deadline_seconds`) bounds a whole backup: every request's wait is cut to the time left,
no retry starts once it has passed, and the store gives up with one line that names it.
It is held in a context variable, so it reaches every store request made inside
`deadline(...)` without being passed through each call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

MiB = 1 << 20
MIN_WAIT = 1.0  # never ask a socket for less: a request cut shorter could not even start

DEADLINE_SETTING = "--deadline / KOTOMI_BACKUP_DEADLINE"


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits (seconds). `read` is how long a small request may wait for its
    answer; a request carrying n bytes gets n / `min_rate` more (the rate of a slow but
    working link)."""

    connect: float = 10.0
    read: float = 20.0
    min_rate: float = 1.0 * MiB  # bytes per second

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0 or self.min_rate <= 0:
            raise ValueError("timeouts and the minimum rate must be positive")

    def for_size(self, size: int = 0) -> float:
        return self.read + max(0, size) / self.min_rate


class Deadline:
    """An instant (on the monotonic clock) by which the work must be done."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a deadline must be a positive number of seconds")
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0

    def describe(self) -> str:
        return f"the deadline of {self.seconds:g} s ({DEADLINE_SETTING}) passed"


class DeadlinePassed(Exception):
    """The deadline passed before the request succeeded; `last` is the error it ended on."""

    def __init__(self, deadline: Deadline, last: BaseException | None = None) -> None:
        super().__init__(deadline.describe())
        self.deadline = deadline
        self.last = last


_current: ContextVar[Deadline | None] = ContextVar("kotomi_backup_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[Deadline | None]:
    """Every store request made in this block ends within `seconds` from now (None or 0: no
    new deadline). Inside an enclosing deadline, the earlier of the two holds."""
    outer = _current.get()
    if not seconds:
        yield outer
        return
    inner = Deadline(seconds)
    chosen = outer if outer is not None and outer.ends <= inner.ends else inner
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)


def request_wait(timeouts: Timeouts, size: int = 0) -> float:
    """How long one request (carrying `size` bytes) may wait for its answer: what its work
    deserves, cut to the deadline's time left. Raises DeadlinePassed once it has passed."""
    wait = timeouts.for_size(size)
    limit = _current.get()
    if limit is None:
        return wait
    left = limit.remaining()
    if left <= 0:
        raise DeadlinePassed(limit)
    return min(wait, max(left, MIN_WAIT))


def check_deadline(last: BaseException, pause: float = 0.0) -> None:
    """Before a retry: raise DeadlinePassed (ending on `last`) when the deadline has passed
    or would pass during the `pause` before the next attempt."""
    limit = _current.get()
    if limit is not None and limit.remaining() <= pause:
        raise DeadlinePassed(limit, last) from last
