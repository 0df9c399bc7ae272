"""Which staged backup a stage run alone should work on: the newest one that still needs it.

A backup's staging directory (`<staging>/<name>/<backup_id>/`, engine/backup.py) records how
far it got: `snapshot.json` once snapshotted, `verify.json` once checked, `manifest.json` once
archived; the upload removes the directory when every destination has it. A stage started on
its own (Dagster's "Materialize" on one asset, "Execute" on one check) picks the newest backup
at the step before it, or says in one sentence what to run first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .manifest import is_backup_id
from .staging import DRAFT_MANIFEST, KEEP_MARK, SNAPSHOT_INFO, VERIFY_INFO, StagedBackup

Stage = Literal["verify", "archive", "upload"]
Progress = Literal["snapshot", "verified", "rejected", "archived"]


@dataclass(frozen=True)
class Pending:
    staged: StagedBackup
    progress: Progress  # the last stage it passed ("rejected": its check failed)


def staged_backups(staging_dir: Path, name: str) -> list[Pending]:
    """Every backup of `name` a Dagster run staged and kept for later stages, newest first (ids
    sort by time); a directory whose snapshot never completed, or that a CLI run left (no
    `.keep`: its process owns it, or was killed), is left out."""
    root = staging_dir / name
    if not root.is_dir():
        return []
    found: list[Pending] = []
    for child in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if not (is_backup_id(child.name) and child.is_dir() and (child / KEEP_MARK).exists()):
            continue
        staged = StagedBackup(name=name, backup_id=child.name, workdir=child)
        progress = _progress(child)
        if progress is not None:
            found.append(Pending(staged, progress))
    return found


def _progress(workdir: Path) -> Progress | None:
    if (workdir / DRAFT_MANIFEST).is_file():
        return "archived"
    if (workdir / VERIFY_INFO).is_file():
        try:
            ok = json.loads((workdir / VERIFY_INFO).read_text()).get("result") == "ok"
        except (OSError, ValueError, AttributeError):
            ok = False
        return "verified" if ok else "rejected"
    if (workdir / SNAPSHOT_INFO).is_file():
        return "snapshot"
    return None


NEEDS: dict[Stage, tuple[Progress, ...]] = {
    "verify": ("snapshot", "verified", "rejected"),  # (re)check any snapshot not yet archived
    "archive": ("verified",),
    "upload": ("archived",),
}


def newest_needing(staging_dir: Path, name: str, stage: Stage) -> StagedBackup | None:
    """The newest staged backup of `name` that `stage` can work on, or None."""
    for pending in staged_backups(staging_dir, name):
        if pending.progress in NEEDS[stage]:
            return pending.staged
    return None


def nothing_to_do(staging_dir: Path, name: str, stage: Stage) -> str:
    """One sentence: why `stage` has nothing to work on, and what to run first."""
    newest = next(iter(staged_backups(staging_dir, name)), None)
    if stage == "verify":
        return f"no snapshot of {name} is staged: materialize {name}/snapshot first"
    if stage == "archive":
        if newest is not None and newest.progress == "snapshot":
            return (
                f"snapshot {newest.staged.backup_id} of {name} is not verified yet: execute "
                f"the verify check of {name}/snapshot first"
            )
        if newest is not None and newest.progress == "rejected":
            return (
                f"snapshot {newest.staged.backup_id} of {name} failed its verify check and is "
                f"never archived: materialize {name}/snapshot again"
            )
        return (
            f"no verified snapshot of {name} waits for its archive: materialize "
            f"{name}/snapshot first"
        )
    return (
        f"no archived backup of {name} waits for its upload (every staged one is on every "
        f"destination): materialize {name}/archive first, or run the whole backup"
    )
