"""Restore drills: prove a backup restores, without going near the live database.

A drill restores into scratch space and runs what a bad day would need: both checksums,
a full integrity_check, the manifest's row counts, and the read queries Kotomi serves. Its
record (with the time it took: the RTO) is written beside the backup as drills/<ts>.json.
It reads the object versions the backup recorded (a rewritten object cannot stand in for the
original), and says whether the store still shows them as written (keeper/tamper.py): a
rewritten or hidden object is reported in `checks["objects"]`, not a failed drill (the
backup restored), and raises its own alert.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from .errors import BackupError, ConfigError, DiskFull
from .fsutil import scratch_folder
from .keeper.tamper import inspect_protection
from .kotomi import KOTOMI_READ_QUERIES, read_query_params
from .layout import DrillRecord, list_backups, write_drill
from .manifest import Manifest, rfc3339
from .prune import backup_refs, plan_listed
from .restore import Chosen, fetch_backup
from .retention import RetentionPolicy
from .stores import BackupStore
from .verify import Profile, open_readonly, verify_database

CHECKS = ("checksums", "integrity", "row_counts", "kotomi_queries")


def drill_backup(
    store: BackupStore,
    manifest: Manifest,
    *,
    identities: Sequence[Any] = (),
    scratch_dir: Path | None = None,
    profile: Profile = "kotomi",
    record: bool = True,
    now: datetime | None = None,
    objects: str | None = None,
) -> DrillRecord:
    """Drill one backup; every check runs and is reported, pass or fail.

    Raises only for what makes a drill impossible to run (no identity for an encrypted
    backup, no room in the scratch space); a backup that does not restore is a failed
    drill, recorded as such.
    """
    if manifest.encrypted and not identities:
        raise ConfigError(
            f"backup {manifest.backup_id} is encrypted: set KOTOMI_BACKUP_AGE_IDENTITY to drill it"
        )
    drilled_at = (now or datetime.now(UTC)).replace(microsecond=0)
    started = time.monotonic()
    checks: dict[str, object] = {}
    problems: list[str] = []
    parent = scratch_dir or Path(tempfile.gettempdir())
    with scratch_folder(parent, "kotomi-drill-") as tmp:
        db = tmp / f"{manifest.name}.db"
        try:
            fetch_backup(Chosen(store, manifest), db, identities=identities)
            checks["checksums"] = True
        except (ConfigError, DiskFull):
            raise  # no evidence against the backup: nothing is recorded
        except BackupError as exc:
            checks["checksums"] = False
            problems.append(str(exc))
        if checks["checksums"]:
            _check_database(db, manifest, profile, checks, problems)
    rto = time.monotonic() - started
    for name in CHECKS:
        checks.setdefault(name, False)
    if objects is not None:
        checks["objects"] = objects
    result = DrillRecord(
        backup_id=manifest.backup_id,
        drilled_at=rfc3339(drilled_at),
        ok=not problems,
        problems=problems,
        rto_seconds=round(rto, 3),
        db_size=manifest.db_size,
        tool_version=__version__,
        checks=checks,
    )
    if record:
        write_drill(store, manifest.name, result)
    return result


def _check_database(
    db: Path, manifest: Manifest, profile: Profile, checks: dict[str, object], problems: list[str]
) -> None:
    report = verify_database(db, mode="full", profile=profile)
    checks["integrity"] = report.ok
    if not report.ok:
        problems.append(report.summary())
    checks["row_counts"] = report.tables == manifest.tables
    if report.tables != manifest.tables:
        differ = sorted(
            t
            for t in set(report.tables) | set(manifest.tables)
            if report.tables.get(t) != manifest.tables.get(t)
        )
        problems.append(f"row counts differ from the manifest in: {', '.join(differ)}")
    if profile != "kotomi":
        checks["kotomi_queries"] = "skipped (generic profile)"
        return
    conn = open_readonly(db)
    try:
        params = read_query_params(conn) or {"site_id": "", "page_id": ""}
        rows = {}
        for name, sql in KOTOMI_READ_QUERIES.items():
            rows[name] = len(conn.execute(sql, params).fetchall())
        checks["kotomi_queries"] = True
        checks["query_rows"] = rows
    except sqlite3.DatabaseError as exc:
        checks["kotomi_queries"] = False
        problems.append(f"Kotomi read query failed: {exc}")
    finally:
        conn.close()


def select_backups(backups: Sequence[Manifest], which: str) -> list[Manifest]:
    """`latest`, `all`, `oldest:N` (the N oldest first: they wait longest for proof and are
    likeliest to rot), or one backup id. `backups` is newest first, as listed."""
    if which == "latest":
        return list(backups[:1])
    if which == "all":
        return list(backups)
    if which.startswith("oldest:"):
        count = int(which.split(":", 1)[1])
        return list(reversed(backups))[:count]
    return [m for m in backups if m.backup_id == which]


def drill_store(
    store: BackupStore,
    name: str,
    which: str,
    *,
    identities: Sequence[Any] = (),
    scratch_dir: Path | None = None,
    profile: Profile = "kotomi",
    among: Sequence[Manifest] | None = None,
) -> list[tuple[Manifest, DrillRecord]]:
    """Drill the chosen backups of one store (chosen `among` some of them, else among all
    it lists); raises when there is none to drill."""
    inventory = store.inventory(name)
    listing = list_backups(store, name, inventory)
    chosen = select_backups(listing.backups if among is None else among, which)
    if not chosen:
        # No URL in the message: callers say where (engine/destinations.py)
        raise BackupError(f"no backup {which!r} of {name!r} to drill there: back it up first")
    found = inspect_protection(
        store,
        chosen,
        inventory,
        revision_keys=listing.revised,
        rewritten_manifests=listing.rewritten,
    )
    return [
        (
            manifest,
            drill_backup(
                store,
                manifest,
                identities=identities,
                scratch_dir=scratch_dir,
                profile=profile,
                objects=found[manifest.backup_id].tampered or "as written",
            ),
        )
        for manifest in chosen
    ]


@dataclass(frozen=True)
class RetainedDrills:
    drilled: list[tuple[Manifest, DrillRecord]]
    not_retained: list[Manifest]  # in no retention tier: the next prune removes them


def drill_retained(
    store: BackupStore,
    name: str,
    which: str,
    policy: RetentionPolicy,
    *,
    identities: Sequence[Any] = (),
    scratch_dir: Path | None = None,
    profile: Profile = "kotomi",
) -> RetainedDrills:
    """The restore test: drill `which` (`all`, `oldest:N`) among the backups the retention
    policy keeps, the ones `list` shows in a tier (kept for inspection included); a backup
    in none is about to go, so it is left out and named."""
    listing = list_backups(store, name)
    try:
        plan = plan_listed(listing.backups, backup_refs(store, name, listing), policy)
    except ValueError as exc:
        raise ConfigError(f"the retention policy cannot plan these backups: {exc}") from exc
    kept = [p.manifest for p in plan if p.keep]
    drilled = drill_store(
        store,
        name,
        which,
        identities=identities,
        scratch_dir=scratch_dir,
        profile=profile,
        among=kept,
    )
    return RetainedDrills(drilled, [p.manifest for p in plan if not p.keep])
