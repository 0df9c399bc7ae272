"""`kotomi-backup list`: the complete backups at each destination, with the retention
tiers each one fills, how long each stays locked, and any whose objects are damaged or were
tampered with (engine/survey.py). The table fits the console's width (COLUMNS, else the
terminal's): ids and sizes never wrap, dates and tiers do."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rich.box import SIMPLE_HEAD
from rich.table import Table

from ..engine.manifest import Manifest
from ..engine.readable import readable_size
from .arguments import add_common, settings_from
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_json, error_line, out


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("list", help="list the complete backups at each destination")
    add_common(p, "--to")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.destinations import at_each_destination, failed, misconfigured
    from ..engine.keeper.guard import KeeperSettings
    from ..engine.retention import RetentionPolicy
    from ..engine.stores import BackupStore
    from ..engine.survey import Survey, survey_store

    settings = settings_from(args)
    policy = RetentionPolicy.from_env()  # a bad KOTOMI_BACKUP_KEEP_* is refused here too
    keeper = KeeperSettings.from_env()

    def listed(store: BackupStore) -> Survey:
        return survey_store(store, settings.name, None if policy.is_empty() else policy, keeper)

    results = at_each_destination(settings.require_urls(), listed)
    report: list[dict[str, Any]] = []
    for at in results:
        url = at.url
        if at.value is None:
            report.append({"url": url, "error": str(at.error), "backups": []})
            error_line(f"cannot list {at.error_line()}")
            continue
        survey: Survey = at.value
        listing = survey.listing
        damaged = survey.damaged
        tampered = {m.backup_id: t for m in listing.backups if (t := survey.tampered(m.backup_id))}
        locks = {m.backup_id: survey.locked_until(m.backup_id) for m in listing.backups}
        stored = {i: p.stored_at for i, p in survey.guard.protections.items()}
        report.append(
            {
                "url": url,
                "backups": [
                    {
                        **json.loads(m.to_json()),
                        "tiers": survey.tiers(m.backup_id),
                        # Objects missing or changed on the store (engine/objects.py): the
                        # backup fills no retention slot. null when they are as recorded.
                        "damaged": damaged.get(m.backup_id),
                        # Objects rewritten or hidden, a time the store contradicts, a lock
                        # short of its tier (engine/keeper/tamper.py). null when none.
                        "tampered": tampered.get(m.backup_id),
                        # The protection horizon: the earliest lock expiry among the
                        # objects it needs; null where the store locks nothing.
                        "locked_until": _when(locks[m.backup_id]),
                        "stored_at": _when(stored.get(m.backup_id)),
                    }
                    for m in listing.backups
                ],
                "incomplete": listing.incomplete,
                "unreadable": listing.unreadable,
                "problems": listing.problems,  # unreadable id -> why
                "hidden": sorted(survey.hidden),  # manifests behind a delete marker
                "lock_mode": survey.guard.mode,  # compliance, governance, or null: no locks
            }
        )
        if args.json:
            continue
        table = Table(
            title=f"{settings.name} at {url}",
            title_justify="left",
            box=SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 1, 0, 0),
        )
        locking = survey.guard.mode is not None
        columns = [
            c
            for c in COLUMNS
            if (out.width >= WIDE or not c.wide_only) and (locking or not c.locks_only)
        ]
        for column in columns:
            table.add_column(
                column.header,
                no_wrap=column.no_wrap,
                justify=column.justify,
                min_width=column.min_width,
            )
        for m in listing.backups:
            row = Row(
                m,
                survey.tiers(m.backup_id),
                damaged.get(m.backup_id),
                tampered.get(m.backup_id),
                locks[m.backup_id],
            )
            table.add_row(*(column.cell(row) for column in columns))
        out.print(table)
        if not listing.backups:
            out.print("  no backups")
        if listing.incomplete:
            out.print(
                f"  {len(listing.incomplete)} incomplete (no manifest, not backups): "
                + ", ".join(listing.incomplete)
            )
        if listing.unreadable:
            out.print(
                f"  {len(listing.unreadable)} with an unreadable manifest (skipped): "
                + listing.describe_unreadable(listing.unreadable)
            )
        for m in listing.backups:
            if m.verify.result != "ok":
                out.print(f"  {m.backup_id}: its manifest records verify {m.verify.result}")
        for backup_id, problem in damaged.items():
            out.print(
                f"  DAMAGED {backup_id}: {problem}; it fills no retention slot "
                "(kept for inspection): do not count on it"
            )
        for backup_id, problem in tampered.items():
            out.print(
                f"  TAMPERED {backup_id}: {problem}; restores read the versions it recorded, "
                "but someone with write access changed the bucket: find out who (access logs) "
                "before trusting it; it fills no retention slot"
            )
        for backup_id in sorted(survey.hidden):
            out.print(
                f"  HIDDEN {backup_id}: its manifest is behind a delete marker; "
                f"`kotomi-backup restore {backup_id} ...` still reads it (docs/immutability.md)"
            )
    if args.json:
        emit_json({"name": settings.name, "destinations": report})
    if misconfigured(results):
        return EXIT_USAGE
    return EXIT_FAILED if failed(results) else EXIT_OK


@dataclass(frozen=True)
class Row:
    """One backup as the table shows it."""

    manifest: Manifest
    tiers: list[str]  # prune's reasons to keep it; empty: the next prune removes it
    damaged: str | None  # why its objects cannot be trusted
    tampered: str | None = None  # what someone did to its objects (keeper/tamper.py)
    locked_until: datetime | None = None  # the earliest lock expiry of its objects


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    no_wrap: bool = False  # ids and sizes stay on one line; the rest wraps to fit COLUMNS
    justify: Literal["left", "right"] = "left"
    min_width: int | None = None  # what a wrapping column keeps when the table must shrink
    wide_only: bool = False  # left out below WIDE columns (it says what another one says)
    locks_only: bool = False  # shown where the store locks objects


def _stored(m: Manifest) -> str:
    return f"{readable_size(m.stored_bytes)} paged" if m.is_paged else readable_size(m.archive.size)


def _short_tiers(reasons: Sequence[str]) -> str:
    """`daily 2026-12-08, oldest yearly 2026` -> `daily, oldest yearly`: the bucket is the
    backup's own date, in the column beside (--json keeps the whole reasons)."""
    short = [
        re.sub(r"^((?:oldest )?(?:hourly|daily|weekly|monthly|yearly)) \S+$", r"\1", r)
        for r in reasons
    ]
    return ", ".join(short) or "-"


WIDE = 100
# The table, one entry per column: a new column is one more entry. It fits 100 columns with
# one more of about 16 (tiers and dates wrap). No "verify" column: a listed backup passed
# its check (a note says otherwise; --json has the mode).
COLUMNS: tuple[Column, ...] = (
    Column("backup id", lambda r: r.manifest.backup_id + _marks(r), True),
    # The backup id is its UTC creation time: below WIDE columns, the id alone says it.
    Column("created (UTC)", lambda r: r.manifest.created_at.replace("T", " ")[:16], wide_only=True),
    Column("database", lambda r: readable_size(r.manifest.db_size), True, "right"),
    Column("stored", lambda r: _stored(r.manifest), True, "right"),
    Column("encrypted", lambda r: "age" if r.manifest.encrypted else "no", True),
    Column("locked until", lambda r: _locked(r.locked_until), min_width=10, locks_only=True),
    Column("tiers", lambda r: _short_tiers(r.tiers), min_width=14),
)


def _marks(row: Row) -> str:
    return (" DAMAGED" if row.damaged else "") + (" TAMPERED" if row.tampered else "")


def _locked(until: datetime | None) -> str:
    return f"{until:%Y-%m-%d %H:%M}" if until is not None else "NOT LOCKED"


def _when(moment: datetime | None) -> str | None:
    from ..engine.manifest import rfc3339

    return rfc3339(moment) if moment is not None else None
