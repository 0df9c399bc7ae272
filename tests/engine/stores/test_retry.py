"""The retry schedule and the resuming download stream, without a network and without waiting."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.stores.retry import ResumingReader, RetryPolicy, retry_call


class Flaky:
    """Fails with the given exceptions in turn, then returns 'done'."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_transient_errors_are_retried_with_growing_jittered_pauses() -> None:
    slept: list[float] = []
    flaky = Flaky(ConnectionResetError(), ConnectionResetError(), ConnectionResetError())
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=30)
    result = retry_call(
        flaky, policy=policy, is_transient=transient, sleep=slept.append, rand=lambda: 1.0
    )
    assert result == "done" and flaky.calls == 4
    assert slept == [0.5, 1.0, 2.0]  # the ceilings: base * 2**(n-1)
    jittered: list[float] = []
    retry_call(
        Flaky(ConnectionResetError(), ConnectionResetError()),
        policy=policy,
        is_transient=transient,
        sleep=jittered.append,
        rand=lambda: 0.25,
    )
    assert jittered == [0.125, 0.25]


def test_a_permanent_error_fails_at_once() -> None:
    slept: list[float] = []
    flaky = Flaky(PermissionError("no"))
    with pytest.raises(PermissionError):
        retry_call(flaky, policy=RetryPolicy(), is_transient=transient, sleep=slept.append)
    assert flaky.calls == 1 and slept == []


def test_attempts_run_out_and_the_last_error_is_raised() -> None:
    slept: list[float] = []
    flaky = Flaky(*(ConnectionResetError(str(i)) for i in range(10)))
    with pytest.raises(ConnectionResetError, match="2"):
        retry_call(
            flaky, policy=RetryPolicy(attempts=3), is_transient=transient, sleep=slept.append
        )
    assert flaky.calls == 3 and len(slept) == 2


@given(
    retry=st.integers(min_value=1, max_value=40),
    rand=st.floats(min_value=0.0, max_value=1.0),
    base=st.floats(min_value=0.0, max_value=5.0),
    cap=st.floats(min_value=0.0, max_value=60.0),
)
def test_every_pause_lies_within_zero_and_the_capped_ceiling(
    retry: int, rand: float, base: float, cap: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    pause = policy.delay(retry, lambda: rand)
    assert 0.0 <= pause <= min(cap, base * 2 ** (retry - 1)) + 1e-9


def test_retries_come_from_the_environment() -> None:
    assert RetryPolicy.from_env({}).attempts == 6
    assert RetryPolicy.from_env({"KOTOMI_BACKUP_RETRIES": "0"}).attempts == 1
    with pytest.raises(ConfigError, match="KOTOMI_BACKUP_RETRIES"):
        RetryPolicy.from_env({"KOTOMI_BACKUP_RETRIES": "many"})


class Stream:
    """A server's response body that breaks after `breaks_after` bytes."""

    def __init__(self, data: bytes, start: int, breaks_after: int | None) -> None:
        self.buffer = io.BytesIO(data[start:])
        self.left = breaks_after

    def read(self, size: int = -1, /) -> bytes:
        if self.left is not None and self.left <= 0:
            raise ConnectionResetError("peer reset")
        chunk = self.buffer.read(size if self.left is None else min(size, self.left))
        if self.left is not None:
            self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        pass


def test_a_broken_download_resumes_where_it_stopped() -> None:
    data = bytes(range(256)) * 4000
    opened: list[int] = []

    def open_at(offset: int) -> Stream:
        opened.append(offset)
        return Stream(data, offset, breaks_after=300_000 if len(opened) < 3 else None)

    raw = ResumingReader(
        open_at,
        len(data),
        policy=RetryPolicy(attempts=3),
        is_transient=transient,
        translate=lambda exc: BackupError(f"gave up: {type(exc).__name__}"),
        what="test",
        sleep=lambda _: None,
    )
    with io.BufferedReader(raw, buffer_size=65536) as reader:
        assert reader.read() == data
    assert opened == [0, 300_000, 600_000]


def test_a_download_that_keeps_failing_ends_in_one_backup_error() -> None:
    def open_at(offset: int) -> Stream:
        return Stream(b"x" * 100, offset, breaks_after=0)

    raw = ResumingReader(
        open_at,
        100,
        policy=RetryPolicy(attempts=2),
        is_transient=transient,
        translate=lambda exc: BackupError("reading failed after 2 attempts"),
        what="test",
        sleep=lambda _: None,
    )
    with pytest.raises(BackupError, match="after 2 attempts"):
        raw.read(10)


def test_a_download_cut_short_is_noticed_and_resumed() -> None:
    data = b"0123456789" * 10
    calls: list[int] = []

    def open_at(offset: int) -> io.BytesIO:
        calls.append(offset)
        end = 50 if offset == 0 else len(data)  # the first answer stops early, cleanly
        return io.BytesIO(data[offset:end])

    raw = ResumingReader(
        open_at,
        len(data),
        policy=RetryPolicy(attempts=3),
        is_transient=transient,
        translate=lambda exc: BackupError("no"),
        what="test",
        sleep=lambda _: None,
    )
    assert io.BufferedReader(raw).read() == data
    assert calls == [0, 50]
