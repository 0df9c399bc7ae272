"""`kotomi-backup verify PATH`: check a database file, a lone archive, or a backup folder.

A backup folder is checked end to end, as a restore would fetch it from the store it sits in
(its format's `fetch`: every checksum), then SQLite's check and the manifest's row counts on
the file, in scratch space. The SQLite check itself is `verify.py`'s, as in the pipeline.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .archive import AgeIdentity, extract_archive
from .errors import BackupError, ConfigError, DiskFull
from .formats import format_of
from .fsutil import scratch_folder
from .manifest import MANIFEST_NAME, Manifest
from .stores import LocalStore
from .verify import Profile, VerifyMode, VerifyReport, verify_database


@dataclass
class Checkup:
    path: Path
    kind: str  # database | archive | backup
    problems: list[str] = field(default_factory=list)
    report: VerifyReport | None = None
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.report is not None and self.report.ok

    def lines(self) -> list[str]:
        head = f"{self.kind} {self.path}: {'ok' if self.ok else 'FAILED'}"
        body = [f"  {p}" for p in self.problems]
        if self.report is not None:
            body.append(f"  {self.report.summary()}")
            body.append(
                f"  {self.report.page_count} pages of {self.report.page_size} bytes, "
                f"sha256 {self.report.db_sha256}"
            )
        return [head, *body]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "kind": self.kind,
            "ok": self.ok,
            "problems": self.problems,
        }
        if self.report is not None:
            rep = asdict(self.report)
            rep["path"] = str(self.report.path)
            rep["result"] = self.report.result
            data["check"] = rep
        if self.manifest is not None:
            data["backup_id"] = self.manifest.backup_id
        return data


def verify_path(
    path: Path,
    *,
    mode: VerifyMode = "quick",
    identity: AgeIdentity | None = None,
    profile: Profile = "kotomi",
    scratch_dir: Path | None = None,
) -> Checkup:
    if not path.exists():
        raise ConfigError(f"not found: {path}")
    if path.is_dir() or path.name == MANIFEST_NAME:
        return _verify_backup_dir(
            path if path.is_dir() else path.parent, mode, identity, profile, scratch_dir
        )
    if path.name.endswith((".zst", ".zst.age")):
        return _verify_archive(path, mode, identity, profile, scratch_dir)
    report = verify_database(path, mode=mode, profile=profile, with_sha256=True)
    return Checkup(path=path, kind="database", report=report)


def _verify_backup_dir(
    directory: Path,
    mode: VerifyMode,
    identity: AgeIdentity | None,
    profile: Profile,
    scratch_dir: Path | None,
) -> Checkup:
    """A backup folder (`<store>/<name>/<id>/`) is fetched from the store it sits in, as a
    restore would (every checksum), then checked like a restored file."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.exists():
        raise ConfigError(f"{directory} has no {MANIFEST_NAME}: it is not a complete backup")
    manifest = Manifest.from_json(manifest_path.read_bytes(), where=str(manifest_path))
    check = Checkup(path=directory, kind="backup", manifest=manifest)
    identities = identity.load() if manifest.encrypted and identity else []
    if manifest.encrypted and not identities:
        raise ConfigError(
            f"backup {manifest.backup_id} is encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to the "
            "age key file (or the key itself)"
        )
    store = LocalStore(directory.parent.parent)
    with scratch_folder(scratch_dir or Path(tempfile.gettempdir()), "kotomi-verify-") as tmp:
        db = tmp / "restored.db"
        try:
            format_of(manifest).fetch(
                store, manifest, db, identities=identities, progress=None, durable=False
            )
        except (ConfigError, DiskFull):
            raise
        except BackupError as exc:
            check.problems.append(str(exc))
            return check
        report = verify_database(db, mode=mode, profile=profile, with_sha256=False)
        check.report = VerifyReport(
            **{**asdict(report), "path": directory, "db_sha256": manifest.db_sha256}
        )
        if report.tables != manifest.tables:
            check.problems.append("row counts differ from the manifest")
    return check


def _verify_archive(
    archive: Path,
    mode: VerifyMode,
    identity: AgeIdentity | None,
    profile: Profile,
    scratch_dir: Path | None,
) -> Checkup:
    """A lone archive file: decrypt, decompress, check the database inside."""
    check = Checkup(path=archive, kind="archive")
    encrypted = archive.name.endswith(".age")
    identities = identity.load() if encrypted and identity else []
    if encrypted and not identities:
        raise ConfigError(
            f"{archive.name} is encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to the age key file"
        )
    with (
        scratch_folder(scratch_dir or Path(tempfile.gettempdir()), "kotomi-verify-") as tmp,
        archive.open("rb") as fh,
    ):
        db = tmp / "restored.db"
        extracted = extract_archive(fh, db, identities=identities, encrypted=encrypted)
        report = verify_database(db, mode=mode, profile=profile, with_sha256=False)
        check.report = VerifyReport(
            **{**asdict(report), "path": archive, "db_sha256": extracted.db_sha256}
        )
    return check
