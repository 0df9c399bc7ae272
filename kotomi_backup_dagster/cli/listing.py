"""`kotomi-backup list`: the complete backups at each destination, with the retention
tiers each one fills and any whose objects are damaged. The table fits the console's width
(COLUMNS, else the terminal's): ids and sizes never wrap, dates and tiers do."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    from ..engine.layout import Listing, list_backups
    from ..engine.prune import backup_refs
    from ..engine.retention import BackupRef, RetentionPolicy
    from ..engine.stores import BackupStore

    settings = settings_from(args)
    policy = RetentionPolicy.from_env()  # a bad KOTOMI_BACKUP_KEEP_* is refused here too

    def listed(store: BackupStore) -> tuple[Listing, list[BackupRef]]:
        listing = list_backups(store, settings.name)
        return listing, backup_refs(store, settings.name, listing)

    results = at_each_destination(settings.require_urls(), listed)
    report: list[dict[str, Any]] = []
    for at in results:
        url = at.url
        if at.value is None:
            report.append({"url": url, "error": str(at.error), "backups": []})
            error_line(f"cannot list {at.error_line()}")
            continue
        listing, refs = at.value
        tiers = _tiers(listing.backups, refs, policy)
        damaged = {r.backup_id: r.problem for r in refs if r.problem}
        report.append(
            {
                "url": url,
                "backups": [
                    {
                        **json.loads(m.to_json()),
                        "tiers": tiers.get(m.backup_id, []),
                        # Objects missing or changed on the store (engine/objects.py): the
                        # backup fills no retention slot. null when they are as recorded.
                        "damaged": damaged.get(m.backup_id),
                    }
                    for m in listing.backups
                ],
                "incomplete": listing.incomplete,
                "unreadable": listing.unreadable,
                "problems": listing.problems,  # unreadable id -> why
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
        columns = [c for c in COLUMNS if out.width >= WIDE or not c.wide_only]
        for column in columns:
            table.add_column(
                column.header,
                no_wrap=column.no_wrap,
                justify=column.justify,
                min_width=column.min_width,
            )
        for m in listing.backups:
            row = Row(m, tiers.get(m.backup_id, []), damaged.get(m.backup_id))
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


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    no_wrap: bool = False  # ids and sizes stay on one line; the rest wraps to fit COLUMNS
    justify: Literal["left", "right"] = "left"
    min_width: int | None = None  # what a wrapping column keeps when the table must shrink
    wide_only: bool = False  # left out below WIDE columns (it says what another one says)


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
    Column("backup id", lambda r: r.manifest.backup_id + (" DAMAGED" if r.damaged else ""), True),
    # The backup id is its UTC creation time: below WIDE columns, the id alone says it.
    Column("created (UTC)", lambda r: r.manifest.created_at.replace("T", " ")[:16], wide_only=True),
    Column("database", lambda r: readable_size(r.manifest.db_size), True, "right"),
    Column("stored", lambda r: _stored(r.manifest), True, "right"),
    Column("encrypted", lambda r: "age" if r.manifest.encrypted else "no", True),
    Column("tiers", lambda r: _short_tiers(r.tiers), min_width=14),
)


def _tiers(backups: Sequence[Any], refs: Sequence[Any], policy: Any) -> dict[str, list[str]]:
    """The retention tiers each backup fills now, as prune decides (none when the policy
    keeps nothing)."""
    from ..engine.prune import plan_listed

    try:
        plan = plan_listed(backups, refs, policy)
    except ValueError:
        return {}
    return {p.manifest.backup_id: p.reasons for p in plan}
