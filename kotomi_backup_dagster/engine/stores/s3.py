"""S3 store (AWS or any S3-compatible service: MinIO, R2, B2...) over a boto3 S3 client.

Uploads stream the file in parts of bounded size, each sent with its SHA-256 (S3 checks it
on receipt); small files go in one PutObject. After the upload, a HeadObject confirms the
stored size and checksum (the full SHA-256, or for multipart the SHA-256 of the parts'
SHA-256s; the MD5 ETag where a service returns no checksum) before the catalog writes the
manifest. A backup of a small archive costs 4 requests: the catalog's manifest check
(GetObject), PutObject, HeadObject and the manifest's PutObject (5 with the CLI's
HeadBucket preflight); an archive over one part adds 2 + one per part. Never a listing.
Each request waits for its answer as long as its size deserves (timeouts.py), never past
the backup's deadline.

The client comes from the caller (dagster-aws's `S3Resource.get_client()`, or boto3's
standard chain in `open_store`); this module never sees credentials, and its messages
carry only the `s3://bucket/prefix` URL and error codes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from .. import config
from ..errors import BackupError, ConfigError, squeezed
from .base import (
    LIST_FROM,
    LockSettings,
    ObjectExists,
    ObjectLock,
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
    log,
    upload_hint,
)
from .timeouts import DeadlinePassed, Timeouts, request_wait

T = TypeVar("T")

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000

# Error codes that no retry will fix and that mean the destination is set up wrongly.
CONFIG_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied; check the credentials and the bucket policy",
    "403": "access denied; check the credentials and the bucket policy",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key is not valid for this service",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid (AWS_SESSION_TOKEN)",
    "TokenRefreshRequired": "the session token has expired",
    "InvalidClientTokenId": "the access key is not valid for this service",
    "401": "the credentials were rejected; check the access key and session token",
    "InvalidBucketName": "the bucket name is not valid",
    "PermanentRedirect": "the bucket is in another region; set AWS_REGION",
    "AuthorizationHeaderMalformed": "the bucket is in another region; set AWS_REGION",
    "IllegalLocationConstraintException": "the bucket is in another region; set AWS_REGION",
    "KMS.NotFoundException": "the KMS key was not found (KOTOMI_BACKUP_S3_KMS_KEY_ID)",
    "KMS.DisabledException": "the KMS key is disabled (KOTOMI_BACKUP_S3_KMS_KEY_ID)",
    "KMS.AccessDeniedException": "no access to the KMS key (KOTOMI_BACKUP_S3_KMS_KEY_ID)",
}
# The IAM right each request needs: a refusal names it (docs/immutability.md has the policies).
PUT, GET, LIST = "s3:PutObject", "s3:GetObject", "s3:ListBucket"
GET_VERSION, LIST_VERSIONS = "s3:GetObjectVersion", "s3:ListBucketVersions"
DELETE, PUT_RETENTION = "s3:DeleteObject", "s3:PutObjectRetention"
LOCK_CONFIG, VERSIONING = "s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning"
MODES = {"COMPLIANCE": "compliance", "GOVERNANCE": "governance"}
TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "BadDigest",  # the body was damaged on the way: sending it again fixes it
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
    "ConditionalRequestConflict",  # another conditional write of the key is in flight
    "500",
    "502",
    "503",
    "504",
}
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# HeadBucket's answer has no body, so no error code: what each bare status can mean.
HEAD_BUCKET_STATUS = {
    "404": "the bucket does not exist",
    "301": "the bucket is in another region; set AWS_REGION",
    "400": (
        "the service refused the request without saying why; check the credentials (an "
        "expired or malformed AWS_SESSION_TOKEN answers this way), AWS_REGION and the "
        "endpoint (AWS_ENDPOINT_URL)"
    ),
    "403": (
        "access refused without saying why; check the access key, the secret key, the "
        "session token (AWS_SESSION_TOKEN) and the bucket policy"
    ),
}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def client_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


def client_error_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status else None


def _botocore_exceptions() -> Any:
    import botocore.exceptions  # type: ignore[import-untyped]

    return botocore.exceptions


def is_transient(exc: BaseException) -> bool:
    """Connection trouble, timeouts, 5xx, throttling: worth another try."""
    import urllib3.exceptions

    bexc = _botocore_exceptions()

    if isinstance(exc, bexc.ClientError):
        code = client_error_code(exc)
        if code in CONFIG_CODES or client_error_status(exc) in (401, 403):
            return False
        return code in TRANSIENT_CODES or client_error_status(exc) in TRANSIENT_STATUS
    return isinstance(
        exc,
        (
            bexc.HTTPClientError,  # connection closed, read timeout, broken stream
            bexc.ConnectionError,  # cannot connect, connect timeout
            bexc.IncompleteReadError,
            bexc.ChecksumError,
            urllib3.exceptions.HTTPError,
            ConnectionError,  # builtin: reset, refused, aborted; also a premature end
            TimeoutError,
        ),
    )


class S3Store:
    """A bucket and a prefix on S3; keys below the prefix follow the storage layout
    (docs/architecture.md#storage-layout)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        sse: str | None = None,
        kms_key_id: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("an s3:// destination needs a bucket: s3://bucket/prefix")
        sse = config.S3_SSE.check(sse)
        if kms_key_id and not (sse or "").startswith("aws:kms"):
            raise ConfigError(
                "KOTOMI_BACKUP_S3_KMS_KEY_ID is set but KOTOMI_BACKUP_S3_SSE is not aws:kms"
            )
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        self.sse = sse
        self.kms_key_id = kms_key_id or None
        self.part_size = part_size
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.sent = 0  # HTTP requests this store sent (every attempt, also botocore's own)
        # Writes carry If-None-Match: * (create-only) unless the service said it cannot.
        self.conditional_writes = True
        self._wait = threading.local()  # the read timeout of the request this thread makes
        client.meta.events.register(
            "before-send.s3", self._count, unique_id=f"kotomi-backup-count-{id(self)}"
        )
        client.meta.events.register(
            "before-call.s3", self._set_wait, unique_id=f"kotomi-backup-wait-{id(self)}"
        )

    def _count(self, **_: Any) -> None:
        self.sent += 1

    def _set_wait(self, context: dict[str, Any], **_: Any) -> None:
        """botocore's per-request read timeout (`context["read_timeout"]`), for the request
        this store is making in this thread; the client's own setting for anything else."""
        wait = getattr(self._wait, "seconds", None)
        if wait is not None:
            context["read_timeout"] = wait

    @contextlib.contextmanager
    def _waiting(self, size: int = 0) -> Iterator[None]:
        self._wait.seconds = request_wait(self.timeouts, size)
        try:
            yield
        finally:
            self._wait.seconds = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        parts = key_parts(self.url, key)
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    # -- errors --------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], size: int = 0, action: str = "") -> T:
        """One request per attempt, each waiting what `size` bytes deserve (timeouts.py);
        `action` is the IAM right it needs, named when it is refused."""

        def attempt() -> T:
            with self._waiting(size):
                return fn()

        return call_translated(
            attempt,
            policy=self.retry,
            is_transient=is_transient,
            what=f"{self.url}: {what}",
            translate=lambda exc: self._translate(exc, what, action),
        )

    def _create(
        self, what: str, fn: Callable[[dict[str, str]], T], size: int = 0
    ) -> tuple[T | None, bool]:
        """A create-only write: `fn(extra)` with If-None-Match: * in `extra`; (answer, False),
        or (None, True) when the key holds an object already (412), for the caller to compare.
        A service that does not know the header (501) gets plain writes from then on."""

        def attempt() -> tuple[T | None, bool]:
            extra = {"IfNoneMatch": "*"} if self.conditional_writes else {}
            try:
                return fn(extra), False
            except Exception as exc:
                if extra and _precondition_failed(exc):
                    return None, True
                if extra and _not_implemented(exc):
                    self.conditional_writes = False
                    log.warning(
                        "%s: the service does not support conditional writes (If-None-Match); "
                        "objects are written without the store refusing overwrites",
                        self.url,
                    )
                    return fn({}), False
                raise

        return self._call(what, attempt, size=size, action=PUT)

    def _translate(self, exc: BaseException, what: str, action: str = "") -> BackupError:
        """One line naming the destination; never credentials, never a presigned URL."""
        bexc = _botocore_exceptions()

        if isinstance(exc, BackupError):
            return exc
        if isinstance(exc, DeadlinePassed):
            last = exc.last
            reason = None if last is None else client_error_code(last) or _transport_reason(last)
            return deadline_error(self.url, what, exc, reason)
        if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return ConfigError(
                f"destination {self.url}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role"
            )
        if isinstance(exc, bexc.CredentialRetrievalError):
            return ConfigError(f"destination {self.url}: AWS credentials could not be loaded")
        code = client_error_code(exc)
        if code in ("AccessDenied", "403") and action:
            return access_denied(self.url, what, action, code)
        if code in CONFIG_CODES:
            return ConfigError(
                f"destination {self.url}: {CONFIG_CODES[code]} ({code}, while {what})"
            )
        if client_error_status(exc) in (401, 403):  # refused, for a reason not listed above
            return ConfigError(
                f"destination {self.url}: the request was refused ({code}, while {what}); "
                "check the credentials, the bucket policy and this machine's clock"
            )
        if is_transient(exc):
            reason = code or _transport_reason(exc)
            return BackupError(
                f"{self.url}: {what} failed after {self.retry.attempts} attempts ({reason})"
                + upload_hint(what)
            )
        if code is not None:
            message = squeezed(str(getattr(exc, "response", {}).get("Error", {}).get("Message")))
            return BackupError(f"{self.url}: {what} failed: {code}: {message}")
        return BackupError(f"{self.url}: {what} failed: {type(exc).__name__}")

    # -- the BackupStore protocol --------------------------------------------------------

    def preflight(self) -> None:
        """One HeadBucket: the bucket exists and these credentials may list it."""
        try:
            self._call(
                "checking the bucket",
                lambda: self.client.head_bucket(Bucket=self.bucket),
                action=LIST,
            )
        except BackupError as exc:
            # HeadBucket has no body, so S3 answers with a bare status code: name every
            # cause that status can have, not a guess.
            code = client_error_code(exc.__cause__) if exc.__cause__ else None
            reason = HEAD_BUCKET_STATUS.get(code or "")
            if reason:
                raise ConfigError(
                    f"destination {self.url}: {reason} (HTTP {code} on HeadBucket)"
                ) from exc.__cause__
            raise

    def put_file(self, key: str, source: Path, *, sha256: str) -> StoredObject:
        full = self._key(key)
        before = self.sent
        size = source.stat().st_size
        if size <= self.part_size:
            expected_checksum, expected_etag, taken = self._put_single(full, source, sha256)
        else:
            expected_checksum, expected_etag, taken = self._put_multipart(
                full, source, size, sha256
            )
        version = self._confirm(key, full, size, expected_checksum, expected_etag, taken)
        return StoredObject(
            key=key, size=size, sha256=sha256, requests=self.sent - before, version=version
        )

    def _damaged(self, source: Path) -> BackupError:
        return BackupError(
            f"{source.name} does not match its checksum while uploading to {self.url}; "
            "the staged archive is damaged: take a new backup"
        )

    def _put_single(self, full: str, source: Path, sha256: str) -> tuple[str, str, bool]:
        data = source.read_bytes()  # at most one part size
        digest = hashlib.sha256(data).digest()
        if digest.hex() != sha256:
            raise self._damaged(source)
        checksum = _b64(digest)
        _, taken = self._create(
            f"uploading {full}",
            lambda extra: self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                **self._sse_args(),
                **extra,
            ),
            size=len(data),
        )
        return checksum, hashlib.md5(data, usedforsecurity=False).hexdigest(), taken

    def _part_size_for(self, size: int) -> int:
        """The configured part size, grown (in MiB steps) when 10,000 parts would not do."""
        needed = math.ceil(size / MAX_PARTS)
        return max(self.part_size, math.ceil(needed / MiB) * MiB)

    def _put_multipart(
        self, full: str, source: Path, size: int, sha256: str
    ) -> tuple[str, str, bool]:
        part_size = self._part_size_for(size)
        created = self._call(
            f"starting the upload of {full}",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256", **self._sse_args()
            ),
            action=PUT,
        )
        upload_id = str(created["UploadId"])
        whole = hashlib.sha256()
        part_digests: list[bytes] = []
        part_md5s: list[bytes] = []
        parts: list[dict[str, Any]] = []
        try:
            with source.open("rb") as fh:
                for number in range(1, MAX_PARTS + 1):
                    chunk = fh.read(part_size)  # the only buffer: one part
                    if not chunk:
                        break
                    whole.update(chunk)
                    digest = hashlib.sha256(chunk).digest()
                    part_digests.append(digest)
                    part_md5s.append(hashlib.md5(chunk, usedforsecurity=False).digest())
                    response = self._upload_part(full, upload_id, number, chunk, _b64(digest))
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": response["ETag"],
                            "ChecksumSHA256": _b64(digest),
                        }
                    )
                    del chunk
            if whole.hexdigest() != sha256:
                raise self._damaged(source)
            taken = self._complete(full, upload_id, parts)
        except BaseException:
            self._abort(full, upload_id)
            raise
        if taken:
            self._abort(full, upload_id)  # the key was taken: these parts are not needed
        composite = _b64(hashlib.sha256(b"".join(part_digests)).digest())
        etag = f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(parts)}"
        return f"{composite}-{len(parts)}", etag, taken

    def _upload_part(
        self, full: str, upload_id: str, number: int, chunk: bytes, checksum: str
    ) -> dict[str, Any]:
        response: dict[str, Any] = self._call(
            f"uploading part {number} of {full}",
            lambda: self.client.upload_part(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            ),
            size=len(chunk),
            action=PUT,
        )
        return response

    def _complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> bool:
        """True when the key was taken already (the HeadObject that follows compares)."""
        tries = 0

        def complete(extra: dict[str, str]) -> None:
            nonlocal tries
            tries += 1
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                )
            except Exception as exc:
                # An earlier try may have completed it and lost only the answer: the
                # HeadObject that follows decides.
                if tries > 1 and client_error_code(exc) == "NoSuchUpload":
                    return
                raise

        # Assembling takes the service a moment per part: about a second each.
        _, taken = self._create(f"completing the upload of {full}", complete, size=len(parts) * MiB)
        return taken

    def _abort(self, full: str, upload_id: str) -> None:
        """Best effort, one try: S3 keeps (and bills) the parts of an unfinished upload."""
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def _confirm(
        self,
        key: str,
        full: str,
        size: int,
        expected_checksum: str,
        expected_etag: str,
        taken: bool = False,
    ) -> str:
        """What is at the key now is what was sent (its version id), or the key was `taken`
        by the same bytes (a re-run, a retry whose answer was lost); otherwise it fails."""
        head = self._call(
            f"checking {full}",
            lambda: self.client.head_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED"),
            action=GET,
        )
        version = _version(head.get("VersionId"))
        landed = int(head.get("ContentLength", -1))
        if landed != size:
            if taken:
                raise self._taken(key)
            raise BackupError(f"{self.url}/{key}: uploaded {size} bytes but {landed} landed")
        stored = head.get("ChecksumSHA256")
        if stored:
            if _strip_parts(str(stored)) != _strip_parts(expected_checksum):
                if taken:
                    raise self._taken(key)
                raise BackupError(
                    f"{self.url}/{key}: the stored SHA-256 differs from the uploaded file; "
                    "the manifest was not written"
                )
            return version
        etag = str(head.get("ETag", "")).strip('"')
        if re.fullmatch(r"[0-9a-f]{32}(-\d+)?", etag) and head.get("ServerSideEncryption") not in (
            "aws:kms",
            "aws:kms:dsse",
        ):
            if etag != expected_etag:
                if taken:
                    raise self._taken(key)
                raise BackupError(
                    f"{self.url}/{key}: the stored MD5 (ETag) differs from the uploaded file; "
                    "the manifest was not written"
                )
            return version
        raise BackupError(
            f"{self.url}/{key}: the service returned no checksum for the upload, so it cannot "
            "be confirmed; the manifest was not written"
        )

    def _taken(self, key: str) -> ObjectExists:
        return ObjectExists(
            f"{self.url}/{key}: another object is there already; a backup's objects are "
            "written once and never replaced"
        )

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        full = self._key(key)
        digest = hashlib.sha256(data).digest()
        checksum = _b64(digest)
        content_type = "application/json" if key.endswith(".json") else "application/octet-stream"
        before = self.sent
        answer, taken = self._create(
            f"writing {full}",
            lambda extra: self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                **self._sse_args(),
                **extra,
            ),
            size=len(data),
        )
        if taken:
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            version = self._confirm(key, full, len(data), checksum, md5, taken=True)
        else:
            version = _version((answer or {}).get("VersionId"))
        return StoredObject(key, len(data), digest.hex(), self.sent - before, version)

    def _get(self, full: str, **extra: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=full, **extra)
        except Exception as exc:
            missing = ("NoSuchKey", "NoSuchVersion", "404")
            if client_error_code(exc) in missing and "Range" not in extra:
                raise ObjectNotFound(full) from exc
            raise
        return response

    def get_bytes(self, key: str, version: str = "") -> bytes:
        full = self._key(key)
        pinned = {"VersionId": version} if version else {}

        def fetch() -> bytes:
            body = self._get(full, **pinned)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data

        return self._call(f"reading {full}", fetch, action=GET_VERSION if version else GET)

    def open_read(self, key: str, version: str = "") -> BinaryIO:
        full = self._key(key)
        pinned: dict[str, Any] = {"VersionId": version} if version else {}
        action = GET_VERSION if version else GET
        first = self._call(f"reading {full}", lambda: self._get(full, **pinned), action=action)
        size = int(first["ContentLength"])
        etag = first.get("ETag")

        def open_at(offset: int) -> Readable:
            extra: dict[str, Any] = {"Range": f"bytes={offset}-", **pinned}
            if etag:
                extra["IfMatch"] = etag  # the same object, or a clear error
            with self._waiting():
                body: Readable = self._get(full, **extra)["Body"]
            return body

        raw = ResumingReader(
            open_at,
            size,
            policy=self.retry,
            is_transient=is_transient,
            translate=lambda exc: self._translate(exc, f"reading {full}", action),
            what=f"{self.url}: reading {full}",
            first=first["Body"],
        )
        return io.BufferedReader(raw, buffer_size=MiB)

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                args["Delimiter"] = delimiter
            if token:
                args["ContinuationToken"] = token
            page: dict[str, Any] = self._call(
                f"listing {prefix or '/'}",
                functools.partial(self.client.list_objects_v2, **args),
                action=LIST,
            )
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list_children(self, prefix: str) -> list[str]:
        base = self._key(prefix)
        listed = f"{base}/" if base else ""
        names: set[str] = set()
        for page in self._pages(listed, "/"):
            for common in page.get("CommonPrefixes", []):
                names.add(str(common["Prefix"])[len(listed) :].strip("/"))
            for item in page.get("Contents", []):
                names.add(str(item["Key"])[len(listed) :])
        return sorted(n for n in names if n and not n.startswith("."))

    def stat_objects(self, keys: Sequence[str]) -> dict[str, StoredObject]:
        """A HeadObject each (with the SHA-256 of an object uploaded in one request), or one
        listing (sizes only) for a folder holding `LIST_FROM` or more of the keys."""
        found: dict[str, StoredObject] = {}
        for folder, names in by_folder(keys).items():
            listed = self._sizes(folder) if len(names) >= LIST_FROM else None
            for name in names:
                key = join_key(folder, name)
                if listed is None:
                    stat = self._head(key)
                    if stat is not None:
                        found[key] = stat
                elif name in listed:
                    found[key] = StoredObject(key, listed[name], "")
        return found

    def _head(self, key: str) -> StoredObject | None:
        full = self._key(key)

        def head() -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=full, ChecksumMode="ENABLED"
                )
            except Exception as exc:
                if client_error_code(exc) in ("404", "NoSuchKey"):
                    return None
                raise
            return answer

        answer = self._call(f"checking {full}", head, action=GET)
        if answer is None:
            return None
        return StoredObject(key, int(answer.get("ContentLength", -1)), _whole_sha256(answer))

    def _sizes(self, folder: str) -> dict[str, int]:
        """Sizes of the objects directly in `folder` (one request per 1000)."""
        base = self._key(folder)
        listed = f"{base}/" if base else ""
        sizes: dict[str, int] = {}
        for page in self._pages(listed, "/"):
            for item in page.get("Contents", []):
                sizes[str(item["Key"])[len(listed) :]] = int(item.get("Size", -1))
        return sizes

    def sweep_partials(self, prefix: str, before: float) -> list[str]:
        """Nothing to sweep: an interrupted upload never becomes an object."""
        return []

    def delete(self, key: str) -> None:
        """The object `key` and everything below `key/` (like removing a directory). On a
        versioned bucket this writes delete markers: the versions stay, until a lifecycle
        rule removes them once no lock holds them (docs/immutability.md)."""
        full = self._key(key)
        if not full:
            raise ValueError("refusing to delete the whole store")
        keys = [full]
        for page in self._pages(f"{full}/", None):
            keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            response = self._call(
                f"deleting {full}",
                functools.partial(
                    self.client.delete_objects,
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                ),
                action=DELETE,
            )
            errors = response.get("Errors") or []
            if errors:
                # S3 reports refusals inside a successful answer: the same rule as any other
                # refusal (configuration, exit 2) when it is the right that is missing.
                first = errors[0]
                code = str(first.get("Code"))
                what = f"deleting {first.get('Key')}"
                if code in ("AccessDenied", "403"):
                    raise access_denied(self.url, what, DELETE, code)
                raise BackupError(
                    f"{self.url}: {what} failed: {code} ({len(errors)} object(s) not deleted)"
                )

    # -- what the keeper reads and locks (LockingStore) ----------------------------------

    def inventory(self, prefix: str) -> dict[str, ObjectState]:
        """One ListObjectVersions (per 1000 versions) of everything below `prefix/`; on a
        bucket without versioning each key has one version, "null" (written here as "")."""
        base = self._key(prefix)
        listed = f"{base}/" if base else ""
        versions: dict[str, list[dict[str, Any]]] = {}
        markers: dict[str, dict[str, Any]] = {}
        marker: dict[str, str] = {}
        while True:
            page: dict[str, Any] = self._call(
                f"listing the versions of {listed or '/'}",
                functools.partial(
                    self.client.list_object_versions, Bucket=self.bucket, Prefix=listed, **marker
                ),
                action=LIST_VERSIONS,
            )
            for item in page.get("Versions", []):
                versions.setdefault(str(item["Key"]), []).append(item)
            for item in page.get("DeleteMarkers", []):
                if item.get("IsLatest"):
                    markers[str(item["Key"])] = item
            if not page.get("IsTruncated"):
                break
            marker = {
                "KeyMarker": str(page.get("NextKeyMarker", "")),
                "VersionIdMarker": str(page.get("NextVersionIdMarker", "")),
            }
        found: dict[str, ObjectState] = {}
        for full, items in versions.items():
            key = full[len(self.prefix) + 1 :] if self.prefix else full
            # S3 lists a key's versions newest first (times can tie within a second).
            items.reverse()
            current = next((i for i in items if i.get("IsLatest")), items[-1])
            found[key] = ObjectState(
                key=key,
                version=_version(current.get("VersionId")),
                size=int(current.get("Size", -1)),
                stored_at=_utc(current["LastModified"]),
                first_stored_at=_utc(items[0]["LastModified"]),
                versions=len(items),
                hidden=full in markers,
                first_version=_version(items[0].get("VersionId")),
                contents=len({(i.get("ETag"), i.get("Size")) for i in items}),
            )
        return found

    def lock_settings(self) -> LockSettings:
        def versioning() -> bool:
            answer = self.client.get_bucket_versioning(Bucket=self.bucket)
            return str(answer.get("Status", "")) == "Enabled"

        def lock_config() -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = self.client.get_object_lock_configuration(
                    Bucket=self.bucket
                )
            except Exception as exc:
                if client_error_code(exc) == "ObjectLockConfigurationNotFoundError":
                    return None
                raise
            return dict(answer.get("ObjectLockConfiguration") or {})

        versioned = self._call("reading the bucket's versioning", versioning, action=VERSIONING)
        config = self._call("reading the bucket's object lock", lock_config, action=LOCK_CONFIG)
        if not config or config.get("ObjectLockEnabled") != "Enabled":
            return LockSettings(enabled=False, versioning=versioned)
        rule = (config.get("Rule") or {}).get("DefaultRetention") or {}
        days = int(rule.get("Days") or 0) + 365 * int(rule.get("Years") or 0)
        return LockSettings(
            enabled=True,
            versioning=versioned,
            default_mode=MODES.get(str(rule.get("Mode", ""))),
            default_period=timedelta(days=days) if days else None,
        )

    def lock_of(self, key: str, version: str = "") -> ObjectLock | None:
        """From a HeadObject of that version (it shows the lock to those allowed
        s3:GetObjectRetention)."""
        full = self._key(key)
        pinned = {"VersionId": version} if version else {}
        head = self._call(
            f"checking the lock of {full}",
            lambda: self.client.head_object(Bucket=self.bucket, Key=full, **pinned),
            action=GET_VERSION if version else GET,
        )
        mode = MODES.get(str(head.get("ObjectLockMode", "")))
        until = head.get("ObjectLockRetainUntilDate")
        if mode is None or until is None:
            return None
        lock = ObjectLock(mode, _utc(until))
        return lock if lock.until > datetime.now(UTC) else None

    def extend_lock(self, key: str, version: str, until: datetime, mode: str) -> ObjectLock:
        """One PutObjectRetention; S3 itself refuses to shorten a lock (COMPLIANCE always,
        GOVERNANCE without the bypass right, which this never sends)."""
        full = self._key(key)
        s3_mode = next(k for k, v in MODES.items() if v == mode)
        pinned = {"VersionId": version} if version else {}
        self._call(
            f"extending the lock of {full}",
            lambda: self.client.put_object_retention(
                Bucket=self.bucket,
                Key=full,
                Retention={"Mode": s3_mode, "RetainUntilDate": until},
                **pinned,
            ),
            action=PUT_RETENTION,
        )
        return ObjectLock(mode, until)


def access_denied(url: str, what: str, action: str, code: str) -> ConfigError:
    """One line naming the right that is missing."""
    return ConfigError(
        f"destination {url}: access denied ({code}, while {what}): these credentials or the "
        f"bucket policy do not allow {action}; see docs/immutability.md for what each role needs"
    )


def _precondition_failed(exc: BaseException) -> bool:
    return client_error_code(exc) in ("PreconditionFailed", "412") or (
        client_error_status(exc) == 412
    )


def _not_implemented(exc: BaseException) -> bool:
    return client_error_code(exc) in ("NotImplemented", "501") or client_error_status(exc) == 501


def _version(value: object) -> str:
    """A version id; "" for none, and for "null" (a bucket that never kept versions)."""
    text = str(value or "")
    return "" if text == "null" else text


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _whole_sha256(head: dict[str, Any]) -> str:
    """The object's own SHA-256 (hex) from a HeadObject with ChecksumMode, or "" when the
    answer holds none or a checksum of parts (multipart: its ETag ends in -N)."""
    stored = str(head.get("ChecksumSHA256") or "")
    etag = str(head.get("ETag", "")).strip('"')
    if (
        not stored
        or re.search(r"-\d+$", stored)
        or re.search(r"-\d+$", etag)
        or head.get("ChecksumType") == "COMPOSITE"
    ):
        return ""
    try:
        digest = base64.b64decode(stored, validate=True)
    except ValueError:
        return ""
    return digest.hex() if len(digest) == 32 else ""


def _strip_parts(checksum: str) -> str:
    """S3 writes a multipart checksum as `<base64>-<parts>`; some services drop the suffix."""
    return re.sub(r"-\d+$", "", checksum)


def _transport_reason(exc: BaseException) -> str:
    bexc = _botocore_exceptions()

    if isinstance(exc, (bexc.ReadTimeoutError, bexc.ConnectTimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, bexc.EndpointConnectionError):
        return could_not_connect(exc)
    if isinstance(exc, (bexc.ConnectionClosedError, ConnectionError, bexc.HTTPClientError)):
        return "connection closed"
    return type(exc).__name__
