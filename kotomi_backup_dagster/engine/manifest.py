"""The manifest: what a backup is. A backup exists iff its manifest does (written last)."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import BackupError

MANIFEST_FORMAT = 1  # a full backup: one archive of the whole snapshot
PAGED_FORMAT = 2  # a paged backup: a page map plus shared packs (engine/paged/)
READABLE_FORMATS = (MANIFEST_FORMAT, PAGED_FORMAT)
MANIFEST_NAME = "manifest.json"
BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A pack's file name on the store: <UTC time>-<6 hex>-<n>.pack[.age] (paged/packs.py).
PACK_FILE_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}-\d+\.pack(\.age)?$")
# An object key below the backup's own folder: no '..', no empty or hidden component.
OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def new_backup_id(now: datetime | None = None) -> str:
    """UTC creation time plus 6 hex chars: the microsecond (5 hex digits) and one random
    digit, so two backups made within one second still sort by time ("latest" is the last
    one made) and two made at the same instant still differ."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{moment.microsecond:05x}{secrets.randbelow(16):x}"


def backup_id_time(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def is_backup_id(text: str) -> bool:
    return bool(BACKUP_ID_RE.match(text))


def check_name(name: str) -> str:
    """A database name is one path component on every store."""
    if not NAME_RE.match(name):
        raise ValueError(f"invalid backup name {name!r}: {NAME_RULE}")
    return name


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ArchiveInfo:
    key: str
    size: int
    sha256: str
    compression: str = "zstd"
    encryption: str = "none"


@dataclass(frozen=True)
class VerifyInfo:
    mode: str
    result: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    name: str
    created_at: str
    db_sha256: str
    db_size: int
    page_size: int
    page_count: int
    sqlite_version: str
    archive: ArchiveInfo
    verify: VerifyInfo
    tables: dict[str, int]
    tool_version: str
    source_journal_mode: str = "wal"
    snapshot_seconds: float = 0.0
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    # Paged backups only (format 2): base, packs {file: {size, sha256, pages}}, stats.
    paged: dict[str, Any] | None = None
    # The version each object it needs was written as (S3 version id, GCS generation), by
    # key: a restore reads exactly these, and a key whose current version is another one was
    # rewritten (docs/immutability.md). Empty where the store keeps no versions.
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def created(self) -> datetime:
        return datetime.strptime(self.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    @property
    def encrypted(self) -> bool:
        return self.archive.encryption != "none"

    @property
    def is_paged(self) -> bool:
        return self.format == PAGED_FORMAT

    @property
    def kind(self) -> str:
        return "paged" if self.is_paged else "full"

    @property
    def stored_bytes(self) -> int:
        """What this backup added to its store: the archive, or a paged backup's page map and
        the packs it wrote (the packs it reuses were counted by earlier backups)."""
        packs = self.pack_files()
        new = (self.paged or {}).get("new_packs", [])
        return self.archive.size + sum(int(packs[f]["size"]) for f in new if f in packs)

    def pack_files(self) -> dict[str, dict[str, Any]]:
        """The packs a paged backup needs ({} for a full backup)."""
        return dict((self.paged or {}).get("packs", {}))

    def version_of(self, key: str) -> str:
        """The version of `key` this backup was written with ("": the current one)."""
        return self.versions.get(key, "")

    def to_json(self) -> bytes:
        data = asdict(self)
        if not data["extra"]:
            del data["extra"]
        if data["paged"] is None:
            del data["paged"]  # a full backup's manifest stays exactly format 1
        if not data["versions"]:
            del data["versions"]
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, *, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") not in READABLE_FORMATS:
                raise BackupError(
                    f"{where}: manifest format {data.get('format')!r} is not supported "
                    f"(this tool reads formats {READABLE_FORMATS}); upgrade kotomi-backup"
                )
            if data["format"] == PAGED_FORMAT and not isinstance(data.get("paged"), dict):
                raise BackupError(f"{where}: paged manifest without its 'paged' section")
            fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            fields["archive"] = ArchiveInfo(**data["archive"])
            fields["verify"] = VerifyInfo(**data["verify"])
            manifest = cls(**fields)
        except BackupError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(
                f"{where}: unreadable manifest ({type(exc).__name__}: {exc})"
            ) from exc
        problem = manifest.problem()
        if problem:
            raise BackupError(f"{where}: unreadable manifest ({problem})")
        return manifest

    def problem(self) -> str | None:
        """What makes this manifest unusable (wrong types, impossible values, keys that leave
        the backup's folder), or None. A store is untrusted input: a manifest is checked
        whole before any of it is used."""
        checks: list[tuple[bool, str]] = [
            (is_backup_id(self.backup_id), f"backup_id {self.backup_id!r} is not a backup id"),
            (bool(NAME_RE.match(str(self.name))), f"name {self.name!r} is not a backup name"),
            (_is_time(self.created_at), f"created_at {self.created_at!r} is not an RFC 3339 time"),
            (_is_sha256(self.db_sha256), "db_sha256 is not a sha256"),
            (_count(self.db_size), f"db_size {self.db_size!r} is not a size"),
            (_count(self.page_count), f"page_count {self.page_count!r} is not a count"),
            (
                _count(self.page_size)
                and 512 <= self.page_size <= 65536
                and self.page_size & (self.page_size - 1) == 0,
                f"page_size {self.page_size!r} is not an SQLite page size",
            ),
            (
                isinstance(self.tables, dict)
                and all(isinstance(k, str) and _count(v) for k, v in self.tables.items()),
                "tables is not a map of table names to row counts",
            ),
            (_count(self.archive.size), f"archive size {self.archive.size!r} is not a size"),
            (
                self.archive.sha256 == "" or _is_sha256(self.archive.sha256),
                "archive sha256 is not a sha256",
            ),
            (
                self._own_key(self.archive.key),
                f"archive key {self.archive.key!r} is not this backup's",
            ),
            (isinstance(self.verify.result, str), "verify result is not a text"),
            (
                isinstance(self.versions, dict)
                and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in self.versions.items()
                ),
                "versions is not a map of object keys to version ids",
            ),
        ]
        for ok, problem in checks:
            if not ok:
                return problem
        return self._paged_problem() if self.format == PAGED_FORMAT else None

    def _own_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        folder, _, file = key.rpartition("/")
        return folder == f"{self.name}/{self.backup_id}" and bool(OBJECT_NAME_RE.match(file))

    def _paged_problem(self) -> str | None:
        paged = self.paged if isinstance(self.paged, dict) else {}
        packs = paged.get("packs", {})
        if not isinstance(packs, dict):
            return "paged packs is not a map of pack files"
        for file, info in packs.items():
            if not isinstance(file, str) or not PACK_FILE_RE.match(file):
                return f"pack {str(file)[:80]!r} is not a pack file name"
            if not (
                isinstance(info, dict)
                and _count(info.get("size"))
                and _count(info.get("pages"))
                and _is_sha256(info.get("sha256"))
            ):
                return f"pack {file} has no valid size, pages and sha256"
        new = paged.get("new_packs", [])
        if not isinstance(new, list) or not all(isinstance(f, str) for f in new):
            return "paged new_packs is not a list of pack files"
        return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(SHA256_RE.match(value))


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True
