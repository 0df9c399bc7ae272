"""Retries for transient store errors: exponential backoff with full jitter, nothing else.

A store says which errors are transient (connection reset, timeout, HTTP 500/503,
throttling); everything else fails at once. Sleep and randomness are injectable, so the
schedule is testable without waiting. The number of retries comes from
`KOTOMI_BACKUP_RETRIES` (config.py; default 5: six attempts, at most ~15 s of sleeping). A deadline
(timeouts.py) stops the retrying once it has passed: the caller gets `DeadlinePassed`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from .. import config
from ..errors import BackupError
from .base import ObjectNotFound
from .timeouts import DeadlinePassed, check_deadline

T = TypeVar("T")
log = logging.getLogger("kotomi_backup_dagster.stores")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1 sleep uniform(0, min(max_delay, base*2**(n-1)))."""

    attempts: int = config.RETRIES.default + 1
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays cannot be negative")

    def ceiling(self, retry: int) -> float:
        """The longest sleep before retry number `retry` (1 = the first retry)."""
        return float(min(self.max_delay, self.base_delay * (2 ** (retry - 1))))

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: spreads clients that failed together over the whole window."""
        return rand() * self.ceiling(retry)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        return cls(attempts=config.RETRIES.read(environ) + 1)


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    what: str = "request",
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call `fn` until it returns, a permanent error escapes, the attempts run out or the
    deadline passes (DeadlinePassed, ending on the last error).

    The last exception is re-raised unchanged; the caller turns it into one clear line.
    """
    retry = 0
    while True:
        try:
            return fn()
        except DeadlinePassed:
            raise
        except Exception as exc:
            retry += 1
            if not is_transient(exc):
                raise
            check_deadline(exc)
            if retry >= policy.attempts:
                raise
            pause = policy.delay(retry, rand)
            check_deadline(exc, pause)
            # One line per retry, with the wait before it: the Dagster layer shows these in
            # the step's event log (defs/engine_log.py), the CLI on stderr.
            log.warning(
                "%s: attempt %d of %d failed (transient error: %s); attempt %d in %.1f s",
                what,
                retry,
                policy.attempts,
                describe(exc),
                retry + 1,
                pause,
            )
            sleep(pause)


def describe(exc: BaseException) -> str:
    """A short name for an error, without URLs or server text (which could hold secrets)."""
    code = getattr(exc, "kotomi_code", None)
    response = getattr(exc, "response", None)
    if not code and isinstance(response, dict):  # botocore's ClientError
        code = response.get("Error", {}).get("Code")
    status = getattr(exc, "code", None)  # google.api_core's HTTP errors
    if not code and isinstance(status, int):
        code = f"HTTP {status}"
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class ResumingReader(io.RawIOBase):
    """A download stream that reopens at the current offset after a transient error.

    `open_at(offset)` returns a fresh stream of the object from `offset` to its end;
    `size` is the object's length, so an early end of stream is noticed and resumed.
    Failures that outlast the policy go through `translate` (into a BackupError).
    """

    def __init__(
        self,
        open_at: Callable[[int], Readable],
        size: int,
        *,
        policy: RetryPolicy,
        is_transient: Callable[[BaseException], bool],
        translate: Callable[[BaseException], Exception],
        what: str,
        first: Readable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        self._open_at = open_at
        self._size = size
        self._policy = policy
        self._is_transient = is_transient
        self._translate = translate
        self._what = what
        self._stream: Readable | None = first
        self._pos = 0
        self._sleep = sleep
        self._rand = rand

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or len(view) == 0:
            return 0
        retry = 0
        while True:
            try:
                if self._stream is None:
                    self._stream = self._open_at(self._pos)
                data = self._stream.read(min(len(view), self._size - self._pos))
                if not data:
                    raise PrematureEnd(f"stream ended at byte {self._pos} of {self._size}")
            except Exception as exc:
                self._drop_stream()
                retry += 1
                if retry >= self._policy.attempts or not self._is_transient(exc):
                    raise self._translate(exc) from exc
                pause = self._policy.delay(retry, self._rand)
                try:
                    check_deadline(exc, pause)
                except DeadlinePassed as late:
                    raise self._translate(late) from exc
                log.warning(
                    "%s: attempt %d of %d failed (transient error while reading: %s); "
                    "resuming at byte %d in %.1f s",
                    self._what,
                    retry,
                    self._policy.attempts,
                    describe(exc),
                    self._pos,
                    pause,
                )
                self._sleep(pause)
                continue
            n = len(data)
            view[:n] = data
            self._pos += n
            return n

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def close(self) -> None:
        self._drop_stream()
        super().close()


class PrematureEnd(ConnectionError):
    """The server closed a download before the object's last byte (transient)."""


def call_translated(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    what: str,
    translate: Callable[[BaseException], BackupError],
) -> T:
    """`retry_call`, then one clear line: what is left is turned into a BackupError by the
    backend's `translate`; a missing object passes through as ObjectNotFound."""
    try:
        return retry_call(fn, policy=policy, is_transient=is_transient, what=what)
    except ObjectNotFound:
        raise
    except Exception as exc:
        raise translate(exc) from exc


# What the end of a failed write of a backup's objects says. Callers that know what comes
# next (engine/backup.py: the CLI's "run the backup again", Dagster's retries) put their own
# next step in its place.
NOT_STORED = "the backup is not stored there"
UPLOAD_AGAIN = "run the upload again"


def upload_hint(what: str) -> str:
    """What a failed write means for the backup (nothing for a drill's record)."""
    if what.startswith(("uploading", "writing", "starting", "completing")) and (
        "/drills/" not in what
    ):
        return f"; {NOT_STORED}: {UPLOAD_AGAIN}"
    return ""


def could_not_connect(exc: BaseException) -> str:
    """The reason for a refused or failed connection, naming the endpoint tried (its scheme,
    host and port only: a request's path and query may hold an upload session's token)."""
    endpoint = _endpoint_of(exc)
    return (
        f"could not connect to the endpoint {endpoint}"
        if endpoint
        else ("could not connect to the endpoint")
    )


def _endpoint_of(exc: BaseException) -> str | None:
    """scheme://host[:port] of the request `exc` (or an error it wraps) was about: botocore
    keeps it in `kwargs["endpoint_url"]`, requests in `request.url`."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        kwargs = getattr(current, "kwargs", None)
        request = getattr(current, "request", None)
        for url in (
            kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None,
            getattr(request, "url", None),
        ):
            if isinstance(url, str) and "://" in url:
                parts = urlsplit(url)
                if parts.hostname:
                    port = f":{parts.port}" if parts.port else ""
                    return f"{parts.scheme}://{parts.hostname}{port}"
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return None


def deadline_error(url: str, what: str, exc: DeadlinePassed, reason: str | None) -> BackupError:
    """One line for a request cut off by the deadline."""
    last = f"; last error: {reason}" if reason else ""
    return BackupError(f"{url}: {what} gave up: {exc.deadline.describe()}{last}{upload_hint(what)}")
