"""`kotomi-backup verify PATH`: check a database file, an archive, or a backup directory.

A backup directory is checked end to end: archive size and sha256 against the manifest,
decrypt + decompress into scratch space, database sha256, SQLite's check, row counts.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .archive import AgeIdentity, extract_archive
from .errors import BackupError, ConfigError, DiskFull
from .fsutil import scratch_folder
from .manifest import MANIFEST_NAME, Manifest
from .paged import rebuild_database
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
        return _verify_archive(path, None, mode, identity, profile, scratch_dir)
    report = verify_database(path, mode=mode, profile=profile, with_sha256=True)
    return Checkup(path=path, kind="database", report=report)


def _verify_backup_dir(
    directory: Path,
    mode: VerifyMode,
    identity: AgeIdentity | None,
    profile: Profile,
    scratch_dir: Path | None,
) -> Checkup:
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.exists():
        raise ConfigError(f"{directory} has no {MANIFEST_NAME}: it is not a complete backup")
    manifest = Manifest.from_json(manifest_path.read_bytes(), where=str(manifest_path))
    if manifest.is_paged:
        return _verify_paged_dir(directory, manifest, mode, identity, profile, scratch_dir)
    archive = directory / Path(manifest.archive.key).name
    if not archive.exists():
        check = Checkup(path=directory, kind="backup", manifest=manifest)
        check.problems.append(f"archive {archive.name} is missing")
        return check
    return _verify_archive(archive, manifest, mode, identity, profile, scratch_dir, shown=directory)


def _verify_paged_dir(
    directory: Path,
    manifest: Manifest,
    mode: VerifyMode,
    identity: AgeIdentity | None,
    profile: Profile,
    scratch_dir: Path | None,
) -> Checkup:
    """A paged backup is rebuilt from the store it sits in (`<store>/<name>/<id>/`)."""
    check = Checkup(path=directory, kind="backup", manifest=manifest)
    store = LocalStore(directory.parent.parent)
    identities = identity.load() if manifest.encrypted and identity else []
    with scratch_folder(scratch_dir or Path(tempfile.gettempdir()), "kotomi-verify-") as tmp:
        db = Path(tmp) / "restored.db"
        try:
            rebuild_database(store, manifest, db, identities=identities)
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
    manifest: Manifest | None,
    mode: VerifyMode,
    identity: AgeIdentity | None,
    profile: Profile,
    scratch_dir: Path | None,
    shown: Path | None = None,
) -> Checkup:
    check = Checkup(
        path=shown or archive, kind="backup" if manifest else "archive", manifest=manifest
    )
    encrypted = archive.name.endswith(".age")
    identities = identity.load() if encrypted and identity else []
    if encrypted and not identities:
        raise ConfigError(
            f"{archive.name} is encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to the age key file"
        )
    if manifest is not None and archive.stat().st_size != manifest.archive.size:
        check.problems.append(
            f"archive is {archive.stat().st_size} bytes, manifest says {manifest.archive.size}"
        )
    with scratch_folder(scratch_dir or Path(tempfile.gettempdir()), "kotomi-verify-") as tmp:
        db = Path(tmp) / "restored.db"
        with archive.open("rb") as fh:
            extracted = extract_archive(
                fh,
                db,
                identities=identities,
                encrypted=encrypted,
                limit=manifest.db_size if manifest is not None else None,
            )
        if manifest is not None:
            if extracted.archive_sha256 != manifest.archive.sha256:
                check.problems.append("archive sha256 differs from the manifest (tampered or torn)")
            if extracted.db_sha256 != manifest.db_sha256:
                check.problems.append("database sha256 differs from the manifest")
        report = verify_database(db, mode=mode, profile=profile, with_sha256=False)
        check.report = VerifyReport(
            **{**asdict(report), "path": archive, "db_sha256": extracted.db_sha256}
        )
        if manifest is not None and report.tables != manifest.tables:
            check.problems.append("row counts differ from the manifest")
    return check
