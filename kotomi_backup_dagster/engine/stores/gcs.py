"""Google Cloud Storage store over a `google.cloud.storage.Client`.

Small files (up to 8 MiB and one chunk) go in one multipart upload; larger ones in a
resumable upload, one chunk of bounded size per request, resumed where the server's
persisted range ends after a transient error. The object metadata sent first carries the
file's CRC32C and MD5, so GCS refuses an object that does not match; the object resource
that comes back (size, crc32c, md5Hash) is compared again before the catalog writes the
manifest. A backup of a small archive costs 3 requests: the catalog's manifest check, the
upload and the manifest upload (4 with the CLI's testIamPermissions preflight); a resumable
upload costs 1 + one per chunk. Never a listing; no background bucket lookups either.
Each request waits for its answer as long as its size deserves (timeouts.py), never past
the backup's deadline.

Library retries are switched off (`retry=None`): `RetryPolicy` is the one retry layer, so
attempts, waiting and the request count stay predictable. Messages carry the
`gs://bucket/prefix` URL and status codes only: never credentials, never a session URL
(a resumable session URL is itself a credential).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..errors import BackupError, ConfigError, squeezed
from .base import (
    LIST_FROM,
    LockSettings,
    ObjectExists,
    ObjectLock,
    ObjectLocked,
    ObjectNotFound,
    ObjectState,
    StoredObject,
    by_folder,
    join_key,
    key_parts,
)
from .retry import (
    Readable,
    ResumingReader,
    RetryPolicy,
    call_translated,
    could_not_connect,
    deadline_error,
    describe,
    log,
    upload_hint,
)
from .timeouts import DeadlinePassed, Timeouts, check_deadline, request_wait

T = TypeVar("T")

KiB = 1 << 10
MiB = 1 << 20
CHUNK_GRANULE = 256 * KiB  # GCS wants every chunk but the last in multiples of this
DEFAULT_CHUNK_SIZE = 16 * MiB
SINGLE_REQUEST_LIMIT = 8 * MiB
READ_CHUNK = 8 * MiB
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
NEEDED_PERMISSIONS = ("storage.objects.create", "storage.objects.get", "storage.objects.list")
# The IAM permission each request needs: a refusal names it (docs/immutability.md: roles).
CREATE, GET, LIST = "storage.objects.create", "storage.objects.get", "storage.objects.list"
DELETE, SET_RETENTION = "storage.objects.delete", "storage.objects.setRetention"
BUCKET_GET = "storage.buckets.get"
MODES = {"Locked": "compliance", "Unlocked": "governance"}
HASH_BLOCK = MiB


class HttpStatusError(Exception):
    """An unexpected HTTP status on a resumable-session request (no URL: it is a secret)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.kotomi_code = f"HTTP {status}"


class NoProgress(ConnectionError):
    """The session answered a chunk without storing any of it (transient)."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, HttpStatusError):
        return exc.status
    code = getattr(exc, "code", None)  # google.api_core.exceptions.GoogleAPICallError
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)  # storage.exceptions.InvalidResponse
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Connection trouble, timeouts, 5xx, 429, a checksum torn in transit."""
    import google.auth.exceptions as gauth
    import requests
    import urllib3.exceptions
    from google.api_core import exceptions as gexc
    from google.cloud.storage import exceptions as sexc  # type: ignore[import-untyped]

    if isinstance(exc, sexc.DataCorruption):
        return True
    if isinstance(exc, (HttpStatusError, gexc.GoogleAPICallError, sexc.InvalidResponse)):
        return _status(exc) in TRANSIENT_STATUS
    if isinstance(exc, gauth.RefreshError):
        return False
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
            gauth.TransportError,
            ConnectionError,  # builtin: reset, refused, aborted; also a premature end
            TimeoutError,
        ),
    )


class GCSStore:
    """A bucket and a prefix on GCS; keys below the prefix follow the storage layout
    (docs/architecture.md#storage-layout)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("a gs:// destination needs a bucket: gs://bucket/prefix")
        if chunk_size <= 0 or chunk_size % CHUNK_GRANULE:
            raise ValueError(f"chunk size must be a positive multiple of {CHUNK_GRANULE}")
        self.client = client
        self.bucket_name = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        self.chunk_size = chunk_size
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.sent = 0  # HTTP requests this store sent (every attempt)
        _quiet_bucket_metadata_cache(client)
        self._bucket = client.bucket(bucket)

    @property
    def url(self) -> str:
        if self.prefix:
            return f"gs://{self.bucket_name}/{self.prefix}"
        return f"gs://{self.bucket_name}"

    def _key(self, key: str) -> str:
        parts = key_parts(self.url, key)
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _timeout(self, size: int = 0) -> tuple[float, float]:
        """(connect, read) for one request carrying `size` bytes, within the deadline."""
        return self.timeouts.connect, request_wait(self.timeouts, size)

    # -- errors --------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], action: str = "") -> T:
        """One request per attempt (library retries are off), retried by the policy;
        `action` is the IAM permission it needs, named when it is refused."""

        def attempt() -> T:
            self.sent += 1
            return fn()

        return call_translated(
            attempt,
            policy=self.retry,
            is_transient=is_transient,
            what=f"{self.url}: {what}",
            translate=lambda exc: self._translate(exc, what, action),
        )

    def _translate(self, exc: BaseException, what: str, action: str = "") -> BackupError:
        import google.auth.exceptions as gauth

        if isinstance(exc, BackupError):
            return exc
        if isinstance(exc, DeadlinePassed):
            last = exc.last
            reason = None
            if last is not None:
                status = _status(last)
                reason = f"HTTP {status}" if status else _transport_reason(last)
            return deadline_error(self.url, what, exc, reason)
        if isinstance(exc, HttpStatusError) and exc.status not in (401, 403):
            return BackupError(
                f"{self.url}: {what} failed: the upload session answered HTTP {exc.status}; "
                "the backup is not stored there, run the upload again"
            )
        if isinstance(exc, (gauth.DefaultCredentialsError, gauth.RefreshError)):
            return ConfigError(
                f"destination {self.url}: no usable Google credentials; set "
                "GOOGLE_APPLICATION_CREDENTIALS or run with a service account"
            )
        status = _status(exc)
        if status == 404 and what.startswith("reading"):
            return BackupError(f"{self.url}: {what} failed: the object is gone (404)")
        if status == 404:
            return ConfigError(f"destination {self.url}: the bucket does not exist (404)")
        if status == 403 and action:
            return ConfigError(
                f"destination {self.url}: access denied (403, while {what}): these "
                f"credentials lack {action} on the bucket; see docs/immutability.md for what "
                "each role needs"
            )
        if status == 403:
            return ConfigError(
                f"destination {self.url}: access denied (403, while {what}); grant the "
                "service account Storage Object Admin (or Creator + Viewer) on the bucket"
            )
        if status == 401:
            return ConfigError(f"destination {self.url}: the credentials were rejected (401)")
        if is_transient(exc):
            reason = f"HTTP {status}" if status else _transport_reason(exc)
            return BackupError(
                f"{self.url}: {what} failed after {self.retry.attempts} attempts ({reason})"
                + upload_hint(what)
            )
        message = getattr(exc, "message", None)
        detail = f": {squeezed(str(message))}" if isinstance(message, str) and message else ""
        label = f"HTTP {status}" if status else type(exc).__name__
        return BackupError(f"{self.url}: {what} failed: {label}{detail}")

    # -- the BackupStore protocol --------------------------------------------------------

    def preflight(self) -> None:
        """One testIamPermissions: the bucket exists and we may write, read and list."""
        granted = self._call(
            "checking permissions",
            lambda: self._bucket.test_iam_permissions(
                list(NEEDED_PERMISSIONS), retry=None, timeout=self._timeout()
            ),
        )
        missing = [p for p in NEEDED_PERMISSIONS if p not in (granted or [])]
        if missing:
            raise ConfigError(
                f"destination {self.url}: missing permission(s) {', '.join(missing)} on the "
                "bucket; grant Storage Object Admin (or Creator + Viewer)"
            )

    def put_file(self, key: str, source: Path, *, sha256: str) -> StoredObject:
        full = self._key(key)
        before = self.sent
        size, digest, crc32c, md5 = _hashes(source)
        if digest != sha256:
            raise BackupError(
                f"{source.name} does not match its checksum while uploading to {self.url}; "
                "the staged archive is damaged: take a new backup"
            )
        if size <= min(self.chunk_size, SINGLE_REQUEST_LIMIT):
            resource = self._put_single(full, source.read_bytes(), crc32c, md5)
        else:
            resource = self._put_resumable(full, source, size, crc32c, md5)
        if resource is None:  # the name was taken: by these bytes (a re-run), or refused
            resource = self._existing(key, full, size, crc32c, md5)
        reported = resource.get("size")
        landed = int(reported) if reported is not None else -1
        if landed != size:
            raise BackupError(f"{self.url}/{key}: uploaded {size} bytes but {landed} landed")
        if resource.get("crc32c") != crc32c or resource.get("md5Hash") not in (md5, None):
            raise BackupError(
                f"{self.url}/{key}: the stored CRC32C/MD5 differ from the uploaded file; "
                "the manifest was not written"
            )
        version = str(resource.get("generation") or "")
        return StoredObject(
            key=key, size=size, sha256=sha256, requests=self.sent - before, version=version
        )

    def _existing(self, key: str, full: str, size: int, crc32c: str, md5: str) -> dict[str, Any]:
        """The object a create-only upload found at its name: the same bytes, or refused."""

        def fetch() -> Any:
            return self._bucket.get_blob(full, retry=None, timeout=self._timeout())

        blob = self._call(f"checking {full}", fetch, action=GET)
        if (
            blob is None
            or int(blob.size or -1) != size
            or blob.crc32c != crc32c
            or blob.md5_hash not in (md5, None)
        ):
            raise ObjectExists(
                f"{self.url}/{key}: another object is there already; a backup's objects are "
                "written once and never replaced"
            )
        return {
            "size": blob.size,
            "crc32c": blob.crc32c,
            "md5Hash": blob.md5_hash,
            "generation": blob.generation,
        }

    def _new_blob(self, full: str, crc32c: str | None, md5: str | None) -> Any:
        blob = self._bucket.blob(full)
        if crc32c:
            blob.crc32c = crc32c  # sent with the upload: GCS rejects an object that differs
        if md5:
            blob.md5_hash = md5
        return blob

    def _put_single(self, full: str, data: bytes, crc32c: str, md5: str) -> dict[str, Any] | None:
        """None when the name holds an object already (412: ifGenerationMatch=0)."""

        def upload() -> dict[str, Any] | None:
            blob = self._new_blob(full, crc32c, md5)
            try:
                blob.upload_from_string(
                    data,
                    content_type=_content_type(full),
                    checksum=None,
                    if_generation_match=0,
                    retry=None,
                    timeout=self._timeout(len(data)),
                )
            except Exception as exc:
                if _status(exc) == 412:
                    return None
                raise
            # The blob now holds the server's answer, not the values set before the upload.
            return {
                "size": blob.size,
                "crc32c": blob.crc32c,
                "md5Hash": blob.md5_hash,
                "generation": blob.generation,
            }

        return self._call(f"uploading {full}", upload, action=CREATE)

    def _put_resumable(
        self, full: str, source: Path, size: int, crc32c: str, md5: str
    ) -> dict[str, Any] | None:
        """Chunks of `chunk_size`; after a failure, ask the session how far it got. None
        when the name holds an object already (412: ifGenerationMatch=0)."""
        http = self.client._http
        session: str | None = None
        offset = 0
        failures = 0
        restarted = False
        ask = False
        with source.open("rb") as fh:
            while True:
                try:
                    if session is None:
                        blob = self._new_blob(full, crc32c, md5)
                        self.sent += 1
                        session = str(
                            blob.create_resumable_upload_session(
                                content_type=_content_type(full),
                                size=size,
                                timeout=self._timeout(),
                                checksum=None,
                                if_generation_match=0,
                                retry=None,
                            )
                        )
                        offset, ask = 0, False
                    was_chunk = not ask
                    if ask:
                        self.sent += 1
                        response = http.request(
                            "PUT",
                            session,
                            data=b"",
                            headers={"Content-Range": f"bytes */{size}"},
                            timeout=self._timeout(),
                            allow_redirects=False,
                        )
                        ask = False
                    else:
                        fh.seek(offset)
                        chunk = fh.read(self.chunk_size)  # the only buffer: one chunk
                        last = offset + len(chunk) - 1
                        self.sent += 1
                        response = http.request(
                            "PUT",
                            session,
                            data=chunk,
                            headers={"Content-Range": f"bytes {offset}-{last}/{size}"},
                            timeout=self._timeout(len(chunk)),
                            allow_redirects=False,
                        )
                        del chunk
                    if response.status_code in (200, 201):
                        resource: dict[str, Any] = response.json()
                        return resource
                    if response.status_code == 412:
                        return None
                    if response.status_code != 308:
                        raise HttpStatusError(response.status_code)
                    persisted = _persisted(response.headers.get("Range"))
                    if was_chunk and persisted <= offset:
                        raise NoProgress(f"no progress at byte {offset}")
                    if persisted > offset:
                        failures = 0  # progress: the retry budget is per stall, not per file
                    offset = persisted
                except Exception as exc:
                    status = _status(exc)
                    if status == 412:  # the session could not start: the name is taken
                        return None
                    # An expired or confused session (404, 410, 400): start over once.
                    if (
                        isinstance(exc, HttpStatusError)
                        and status in (400, 404, 410)
                        and not restarted
                    ):
                        restarted, session = True, None
                        continue
                    failures += 1
                    if failures >= self.retry.attempts or not is_transient(exc):
                        raise self._translate(exc, f"uploading {full}") from exc
                    pause = self.retry.delay(failures)
                    try:
                        check_deadline(exc, pause)
                    except DeadlinePassed as late:
                        raise self._translate(late, f"uploading {full}") from exc
                    log.warning(
                        "%s: transient error (%s) at byte %d of %d; asking the session "
                        "and resuming in %.2f s",
                        self.url,
                        describe(exc),
                        offset,
                        size,
                        pause,
                    )
                    time.sleep(pause)
                    ask = session is not None

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        full = self._key(key)
        before = self.sent
        crc32c, md5 = _small_hashes(data)
        resource = self._put_single(full, data, crc32c, md5)
        if resource is None:
            resource = self._existing(key, full, len(data), crc32c, md5)
        version = str(resource.get("generation") or "")
        sha256 = hashlib.sha256(data).hexdigest()
        return StoredObject(key, len(data), sha256, self.sent - before, version)

    def _blob(self, full: str, version: str) -> Any:
        return (
            self._bucket.blob(full, generation=int(version)) if version else self._bucket.blob(full)
        )

    def get_bytes(self, key: str, version: str = "") -> bytes:
        full = self._key(key)

        def fetch() -> bytes:
            try:
                data: bytes = self._blob(full, version).download_as_bytes(
                    retry=None, timeout=self._timeout()
                )
            except Exception as exc:
                if _status(exc) == 404:
                    raise ObjectNotFound(full) from exc
                raise
            return data

        return self._call(f"reading {full}", fetch, action=GET)

    def _reloaded(self, full: str, version: str, what: str) -> Any:
        """That version's blob with its metadata (one GET); ObjectNotFound when absent."""
        blob = self._blob(full, version)

        def reload() -> None:
            try:
                blob.reload(retry=None, timeout=self._timeout())
            except Exception as exc:
                if _status(exc) == 404:
                    raise ObjectNotFound(full) from exc
                raise

        self._call(f"{what} {full}", reload, action=GET)
        return blob

    def open_read(self, key: str, version: str = "") -> BinaryIO:
        full = self._key(key)
        blob = self._reloaded(full, version, "reading")
        size = int(blob.size or 0)
        # Every range comes from the generation measured here, even if it is overwritten.
        pinned = self._bucket.blob(full, generation=blob.generation)

        def open_at(offset: int) -> Readable:
            return _Ranges(self, pinned, offset, size)

        raw = ResumingReader(
            open_at,
            size,
            policy=self.retry,
            is_transient=is_transient,
            translate=lambda exc: self._translate(exc, f"reading {full}", GET),
            what=f"{self.url}: reading {full}",
        )
        return io.BufferedReader(raw, buffer_size=MiB)

    def _names(self, prefix: str, delimiter: str | None) -> list[str]:
        """Every name below `prefix` ('directories' too with a delimiter)."""
        return [name for name, _ in self._entries(prefix, delimiter)]

    def _entries(self, prefix: str, delimiter: str | None) -> list[tuple[str, int | None]]:
        """Every object below `prefix` with its size ('directories' too, sized None, with a
        delimiter), page by page. Each page is its own retried request, restarted from its
        page token."""
        entries: list[tuple[str, int | None]] = []
        token: str | None = None

        def fetch() -> tuple[list[tuple[str, int | None]], str | None]:
            listing = self.client.list_blobs(
                self.bucket_name,
                prefix=prefix or None,
                delimiter=delimiter,
                page_token=token,
                retry=None,
                timeout=self._timeout(),
            )
            page = next(listing.pages, None)
            if page is None:
                return [], None
            found: list[tuple[str, int | None]] = [
                (str(blob.name), None if blob.size is None else int(blob.size)) for blob in page
            ]
            found.extend((str(p), None) for p in page.prefixes)
            return found, listing.next_page_token

        while True:
            found, token = self._call(f"listing {prefix or '/'}", fetch, action=LIST)
            entries.extend(found)
            if not token:
                return entries

    def list_children(self, prefix: str) -> list[str]:
        base = self._key(prefix)
        listed = f"{base}/" if base else ""
        children = {name[len(listed) :].strip("/") for name in self._names(listed, "/")}
        return sorted(n for n in children if n and not n.startswith("."))

    def stat_objects(self, keys: Sequence[str]) -> dict[str, StoredObject]:
        """Sizes only (GCS keeps an MD5 and a CRC32C, no SHA-256): one metadata GET each, or
        one listing for a folder holding `LIST_FROM` or more of the keys."""
        found: dict[str, StoredObject] = {}
        for folder, names in by_folder(keys).items():
            listed: dict[str, int] | None = None
            if len(names) >= LIST_FROM:
                base = self._key(folder)
                within = f"{base}/" if base else ""
                listed = {
                    name[len(within) :]: size
                    for name, size in self._entries(within, "/")
                    if size is not None
                }
            for name in names:
                key = join_key(folder, name)
                size = self._size_of(key) if listed is None else listed.get(name)
                if size is not None:
                    found[key] = StoredObject(key, size, "")
        return found

    def _size_of(self, key: str) -> int | None:
        full = self._key(key)

        def fetch() -> int | None:
            blob = self._bucket.get_blob(full, retry=None, timeout=self._timeout())
            return None if blob is None or blob.size is None else int(blob.size)

        return self._call(f"checking {full}", fetch, action=GET)

    def sweep_partials(self, prefix: str, before: float) -> list[str]:
        """Nothing to sweep: an interrupted upload never becomes an object."""
        return []

    def delete(self, key: str) -> None:
        """The object `key` and everything below `key/` (like removing a directory). An
        object still under retention is refused by GCS: `ObjectLocked`, with its expiry."""
        full = self._key(key)
        if not full:
            raise ValueError("refusing to delete the whole store")
        for name in [full, *self._names(f"{full}/", None)]:

            def remove(name: str = name) -> None:
                try:
                    self._bucket.blob(name).delete(retry=None, timeout=self._timeout())
                except Exception as exc:
                    if _status(exc) != 404:
                        raise

            try:
                self._call(f"deleting {name}", remove, action=DELETE)
            except ConfigError as exc:
                cause = exc.__cause__
                if cause is None or not _is_retention_refusal(cause):
                    raise
                key_name = name[len(self.prefix) + 1 :] if self.prefix else name
                lock = self.lock_of(key_name)
                raise ObjectLocked(
                    f"{self.url}/{key_name} is locked"
                    + (f" until {lock.until:%Y-%m-%dT%H:%M:%SZ}" if lock else "")
                    + "; it is removed once its lock expires",
                    lock.until if lock else None,
                ) from None

    # -- what the keeper reads and locks (LockingStore) ----------------------------------

    def inventory(self, prefix: str) -> dict[str, ObjectState]:
        """Every generation below `prefix/` (noncurrent ones too, on a versioned bucket),
        with each live object's lock from the listing itself."""
        base = self._key(prefix)
        listed = f"{base}/" if base else ""
        blobs: dict[str, list[Any]] = {}
        token: str | None = None

        def fetch() -> tuple[list[Any], str | None]:
            listing = self.client.list_blobs(
                self.bucket_name,
                prefix=listed or None,
                versions=True,
                page_token=token,
                retry=None,
                timeout=self._timeout(),
            )
            page = next(listing.pages, None)
            return ([] if page is None else list(page)), listing.next_page_token

        while True:
            found_page, token = self._call(
                f"listing the versions of {listed or '/'}", fetch, action=LIST
            )
            for blob in found_page:
                blobs.setdefault(str(blob.name), []).append(blob)
            if not token:
                break
        found: dict[str, ObjectState] = {}
        for full, generations in blobs.items():
            key = full[len(self.prefix) + 1 :] if self.prefix else full
            generations.sort(key=lambda b: int(b.generation or 0))
            live = [b for b in generations if b.time_deleted is None]
            current = live[-1] if live else generations[-1]
            found[key] = ObjectState(
                key=key,
                version=str(current.generation or ""),
                size=int(current.size or 0),
                stored_at=_utc(current.time_created),
                first_stored_at=_utc(generations[0].time_created),
                versions=len(generations),
                hidden=not live,
                lock=_blob_lock(current),
                lock_known=True,
                first_version=str(generations[0].generation or ""),
                contents=len({(b.md5_hash, b.size) for b in generations}),
            )
        return found

    def lock_settings(self) -> LockSettings:
        def fetch() -> Any:
            bucket = self.client.bucket(self.bucket_name)
            bucket.reload(retry=None, timeout=self._timeout())
            return bucket

        bucket = self._call("reading the bucket's retention settings", fetch, action=BUCKET_GET)
        period = bucket.retention_period
        per_object = str(getattr(bucket, "object_retention_mode", "") or "") == "Enabled"
        return LockSettings(
            enabled=per_object or bool(period),
            versioning=bool(bucket.versioning_enabled),
            default_mode=(
                ("compliance" if bucket.retention_policy_locked else "governance")
                if period
                else None
            ),
            default_period=timedelta(seconds=int(period)) if period else None,
        )

    def lock_of(self, key: str, version: str = "") -> ObjectLock | None:
        return _blob_lock(self._reloaded(self._key(key), version, "checking the lock of"))

    def extend_lock(self, key: str, version: str, until: datetime, mode: str) -> ObjectLock:
        """One PATCH of the object's retention; GCS itself refuses to shorten a Locked one
        (and an Unlocked one without `overrideUnlockedRetention`, which this never sends)."""
        full = self._key(key)
        gcs_mode = next(k for k, v in MODES.items() if v == mode)

        def patch() -> None:
            blob = self._blob(full, version)
            blob.retention.mode = gcs_mode
            blob.retention.retain_until_time = until
            blob.patch(retry=None, timeout=self._timeout())

        self._call(f"extending the lock of {full}", patch, action=SET_RETENTION)
        return ObjectLock(mode, until)


def _own_lock(blob: Any) -> ObjectLock | None:
    """The object's own retention (not the bucket policy's), when it has not expired."""
    retention = getattr(blob, "retention", None)
    mode = MODES.get(str(getattr(retention, "mode", "") or ""))
    until = getattr(retention, "retain_until_time", None)
    if mode is None or until is None or _utc(until) <= datetime.now(UTC):
        return None
    return ObjectLock(mode, _utc(until))


def _blob_lock(blob: Any) -> ObjectLock | None:
    """The longer of the object's own retention and the bucket policy's expiry for it."""
    own = _own_lock(blob)
    expires = getattr(blob, "retention_expiration_time", None)
    if expires is not None and _utc(expires) > datetime.now(UTC):
        policy = ObjectLock("compliance", _utc(expires))
        if own is None or policy.until > own.until:
            return policy
    return own


def _is_retention_refusal(exc: BaseException) -> bool:
    message = str(getattr(exc, "message", "") or exc).lower()
    return _status(exc) == 403 and ("retention" in message or "hold" in message)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)


class _Ranges:
    """Reads an object from `offset` as a series of ranged GETs of bounded size."""

    def __init__(self, store: GCSStore, blob: Any, offset: int, size: int) -> None:
        self._store = store
        self._blob = blob
        self._pos = offset
        self._size = size
        self._buffer = b""

    def read(self, size: int = -1, /) -> bytes:
        if not self._buffer and self._pos < self._size:
            end = min(self._pos + READ_CHUNK, self._size) - 1
            self._store.sent += 1
            self._buffer = self._blob.download_as_bytes(
                start=self._pos, end=end, checksum=None, retry=None, timeout=self._store._timeout()
            )
            self._pos += len(self._buffer)
        n = len(self._buffer) if size < 0 else size
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        self._buffer = b""


def _quiet_bucket_metadata_cache(client: Any) -> None:
    """google-cloud-storage 3.x fetches bucket metadata in background threads (a GET of the
    bucket on first use and after any 404) only to label OpenTelemetry spans. With those
    traces off (the default), they are requests for nothing, outside the retry policy and
    the request count, needing storage.buckets.get: switch them off on this client."""
    traces = os.environ.get("ENABLE_GCS_PYTHON_CLIENT_OTEL_TRACES", "").strip().lower()
    if traces not in ("1", "true", "yes", "on") and getattr(client, "_bucket_metadata_cache", None):
        client._bucket_metadata_cache = None


def _hashes(source: Path) -> tuple[int, str, str, str]:
    """Size, sha256 (hex), crc32c and md5 (base64, as GCS writes them) in one pass."""
    import google_crc32c

    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    checksum: Any = google_crc32c.Checksum
    crc = checksum()
    size = 0
    with source.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            sha.update(block)
            md5.update(block)
            crc.update(block)
            size += len(block)
    return size, sha.hexdigest(), _b64(crc.digest()), _b64(md5.digest())


def _small_hashes(data: bytes) -> tuple[str, str]:
    """crc32c and md5 (base64, as GCS writes them) of a small object."""
    import google_crc32c

    checksum: Any = google_crc32c.Checksum
    crc = checksum()
    crc.update(data)
    return _b64(crc.digest()), _b64(hashlib.md5(data, usedforsecurity=False).digest())


def _persisted(range_header: str | None) -> int:
    """`Range: bytes=0-N` on a 308 means N+1 bytes are stored; no header means none."""
    if not range_header:
        return 0
    match = re.fullmatch(r"bytes=0-(\d+)", range_header.strip())
    return int(match.group(1)) + 1 if match else 0


def _content_type(name: str) -> str:
    return "application/json" if name.endswith(".json") else "application/octet-stream"


def _transport_reason(exc: BaseException) -> str:
    import requests
    import urllib3.exceptions

    if isinstance(exc, (requests.Timeout, TimeoutError)):
        return "timed out"
    if _caused_by(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
        return could_not_connect(exc)
    if isinstance(exc, (requests.ConnectionError, ConnectionError)):
        return "connection closed"
    return type(exc).__name__


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """`exc` or an error it wraps (requests keeps urllib3's in its args) is one of `kinds`."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return True
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return False
