"""Do one piece of work at every destination of a database and keep what each one gave.

Destinations fail on their own: an expired S3 key must not stop the local copy from being
listed, pruned or drilled. The CLI's list, prune and drill and the Dagster prune, drill,
restore test and backup catalog all go through `at_each_destination`, then decide what a
failure means for them (a non-zero exit, a failed step, an alert).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from .errors import BackupError, ConfigError, without_repeated_prefix
from .stores import BackupStore, open_store, safe_url, url_scheme

T = TypeVar("T")


@dataclass(frozen=True)
class AtDestination(Generic[T]):
    """What the work gave at one destination, or the error that stopped it there."""

    url: str  # safe to show (no credentials)
    value: T | None = None
    error: BackupError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def error_line(self) -> str:
        """`<url>: <what went wrong>`, the URL said once."""
        return without_repeated_prefix(f"{self.url}: {self.error}")


def at_each_destination(
    destinations: Iterable[str | BackupStore], work: Callable[[BackupStore], T]
) -> list[AtDestination[T]]:
    """Run `work` at each destination in turn (a URL is opened first), in the given order.

    A `BackupError` (a bad URL included) is kept as that destination's result and the next
    one is tried; any other exception is a bug and propagates."""
    results: list[AtDestination[T]] = []
    for dest in destinations:
        url = safe_url(dest if isinstance(dest, str) else dest.url)
        try:
            store = open_store(dest) if isinstance(dest, str) else dest
            results.append(AtDestination(url, value=work(store)))
        except BackupError as exc:
            results.append(AtDestination(url, error=exc))
    return results


def succeeded(results: Sequence[AtDestination[T]]) -> list[T]:
    return [cast(T, r.value) for r in results if r.error is None]


def failed(results: Sequence[AtDestination[T]]) -> list[AtDestination[T]]:
    return [r for r in results if r.error is not None]


def misconfigured(results: Sequence[AtDestination[T]]) -> bool:
    """Whether a destination failed on its configuration (CLI exit 2, not 1)."""
    return any(isinstance(r.error, ConfigError) for r in results)


# What a destination's error says about its cause, and what to check first: a clause that
# follows "the backup is not stored there: " in a failed upload's line, and starts an
# alert's advice. The phrases are the stores' own (stores/s3.py, gcs.py, local.py); first
# match wins: a failed connection first (GCS's "checking permissions failed after 6 attempts
# (could not connect ...)" is no question of permissions).
_UNREACHABLE = (
    "check that the destination is reachable from this machine (the network, the "
    "endpoint in {endpoint}, the provider's status page)"
)
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("could not connect", "connection closed", "connection failed", "timed out"), _UNREACHABLE),
    (
        ("disk full",),
        "free space on that disk, or point the destination or staging elsewhere",
    ),
    (
        ("bucket does not exist", "another region", "bucket name", "no bucket", "bad destination"),
        "check the destination URL (bucket and prefix) and AWS_REGION",
    ),
    (
        (
            "access denied",
            "access refused",
            "credentials",
            "access key",
            "secret key",
            "session token",
            "permission",
            "not writable",
            "kms key",
            "refused the request",
        ),
        "check the credentials (access key, secret key, session token or service account) "
        "and what they may do there (the bucket's policy, or a folder's owner and mode)",
    ),
    (("gave up:", "failed after", "http 5"), _UNREACHABLE),
)
# Where each kind of destination's endpoint is set (the variables its client reads).
_ENDPOINT_SETTINGS = {"s3": "AWS_ENDPOINT_URL", "gs": "STORAGE_EMULATOR_HOST"}


def what_to_check(error: str, url: str = "") -> str | None:
    """The first thing to check for a destination's error, by its cause (an unreachable
    endpoint is a network question, not one of permissions); None when it says no cause.
    `url`, the destination's, narrows the endpoint's variable to its kind's."""
    endpoint = _ENDPOINT_SETTINGS.get(url_scheme(url)) if url else None
    text = error.lower()
    for phrases, check in _CAUSES:
        if any(phrase in text for phrase in phrases):
            return check.format(endpoint=endpoint or " or ".join(_ENDPOINT_SETTINGS.values()))
    return None
