"""The full format: one standard zstd frame of the snapshot, age-wrapped when encrypted, so
that `age -d -i key | zstd -d > kotomi.db` restores it without this tool (format 1)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..archive import Progress, extract_archive, parse_recipients, write_archive
from ..errors import BackupError
from ..fsutil import require_room
from ..layout import backup_prefix, manifest_key
from ..manifest import ArchiveInfo, Manifest
from ..settings import BackupSettings
from ..snapshot import Snapshot
from ..staging import DRAFT_MANIFEST, StagedBackup
from ..stores import BackupStore, ObjectNotFound
from ..verify import VerifyReport
from . import FormatName, Prepared, Publish, Published, draft_manifest


class FullFormat:
    name: FormatName = "full"

    def take(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        moment: datetime,
        stores: list[BackupStore],
        contact_stores: bool,
        progress: Progress | None,
        durable: bool,
    ) -> tuple[Snapshot | None, str | None]:
        return None, None  # always the plain copy

    def checked_at_snapshot(self, staged: StagedBackup) -> bool:
        return False

    def prepare(
        self,
        staged: StagedBackup,
        settings: BackupSettings,
        check: Callable[[], VerifyReport],
        progress: Progress | None,
        durable: bool,
    ) -> tuple[VerifyReport, Prepared]:
        """Compress (and encrypt) while the check runs; the archive is kept only if the check
        passed (on failure it is deleted: nothing may be uploaded)."""
        recipients = parse_recipients(settings.age_recipients)
        archive_path = staged.archive_path(bool(recipients))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kotomi-verify") as pool:
            checking = pool.submit(check)
            try:
                result = write_archive(
                    staged.snapshot_path,
                    archive_path,
                    recipients=recipients,
                    progress=progress,
                    durable=durable,
                )
            except BaseException:
                wait([checking])  # the check reads the snapshot: let it end before cleanup
                raise
            try:
                report = checking.result()
            except BaseException:
                archive_path.unlink(missing_ok=True)
                raise
        if not report.ok:
            archive_path.unlink(missing_ok=True)
            return report, Prepared(None, result.seconds)
        manifest = draft_manifest(
            staged,
            report,
            db_sha256=result.db_sha256,
            db_size=result.db_size,
            archive=ArchiveInfo(
                key=f"{backup_prefix(staged.name, staged.backup_id)}/{result.path.name}",
                size=result.size,
                sha256=result.sha256,
                compression=result.compression,
                encryption=result.encryption,
            ),
        )
        staged.write_bytes(DRAFT_MANIFEST, manifest.to_json())
        return report, Prepared(manifest, result.seconds)

    @contextlib.contextmanager
    def publisher(
        self, staged: StagedBackup, draft: Manifest, settings: BackupSettings
    ) -> Iterator[Publish]:
        archive = staged.archive_path(draft.encrypted)
        if not archive.exists():
            raise BackupError(f"staged archive {archive} is gone; run the whole backup again")

        def publish(store: BackupStore) -> Published:
            """The archive, confirmed intact where it landed, then the manifest (last), which
            records the archive's version there."""
            stored = store.put_file(draft.archive.key, archive, sha256=draft.archive.sha256)
            if stored.size != draft.archive.size:
                raise BackupError(
                    f"{store.url}/{draft.archive.key}: {stored.size} bytes landed, "
                    f"expected {draft.archive.size}; the manifest was not written"
                )
            versions = {draft.archive.key: stored.version} if stored.version else {}
            manifest = replace(draft, versions=versions)
            store.put_bytes(manifest_key(draft.name, draft.backup_id), manifest.to_json())
            return Published(bytes=stored.size, requests=stored.requests + 1, manifest=manifest)

        yield publish

    def published(self, store: BackupStore, draft: Manifest) -> bool:
        """The draft's manifest is there (with the version its store gave the archive)."""
        try:
            raw = store.get_bytes(manifest_key(draft.name, draft.backup_id))
            stored = Manifest.from_json(raw)
        except (ObjectNotFound, BackupError):
            return False
        return replace(stored, versions={}).to_json() == draft.to_json()

    def fetch(
        self,
        store: BackupStore,
        manifest: Manifest,
        dest: Path,
        *,
        identities: list[Any],
        progress: Progress | None,
        durable: bool,
    ) -> Path:
        require_room(dest.parent, manifest.db_size)  # a size from the store: checked before use
        try:
            stream = store.open_read(
                manifest.archive.key, manifest.version_of(manifest.archive.key)
            )
        except ObjectNotFound as exc:
            raise BackupError(
                f"backup {manifest.backup_id}: archive {manifest.archive.key} is missing at "
                f"{store.url}"
            ) from exc
        with contextlib.closing(stream):
            result = extract_archive(
                stream,
                dest,
                identities=identities,
                encrypted=manifest.encrypted,
                progress=progress,
                limit=manifest.db_size,
                durable=durable,
            )
        problems = []
        if result.archive_sha256 != manifest.archive.sha256:
            problems.append("archive sha256 differs from the manifest (tampered or torn)")
        if result.db_sha256 != manifest.db_sha256 or result.db_size != manifest.db_size:
            problems.append("restored database sha256 differs from the manifest")
        if problems:
            dest.unlink(missing_ok=True)
            raise BackupError(
                f"backup {manifest.backup_id}: {'; '.join(problems)}; nothing restored"
            )
        return dest


FULL = FullFormat()
