"""`kotomi-backup list`: the complete backups at each destination, with the retention
tiers each one fills and any whose objects are damaged."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from ..engine.readable import readable_size
from .arguments import add_common, settings_from
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_json, err, out


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
            err.print(f"kotomi-backup: cannot list {at.error_line()}")
            continue
        listing, refs = at.value
        tiers = _tiers(refs, policy)
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
        table = Table(title=f"{settings.name} at {url}", title_justify="left")
        columns = ("backup id", "created (UTC)", "database", "stored", "encryption", "verify")
        for col in (*columns, "tiers"):
            table.add_column(col)
        for m in listing.backups:
            table.add_row(
                f"{m.backup_id} DAMAGED" if m.backup_id in damaged else m.backup_id,
                m.created_at,
                readable_size(m.db_size),
                f"{readable_size(m.stored_bytes)} paged"
                if m.is_paged
                else readable_size(m.archive.size),
                m.archive.encryption,
                f"{m.verify.mode} {m.verify.result}",
                ", ".join(tiers.get(m.backup_id, [])) or "-",
            )
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


def _tiers(refs: Sequence[Any], policy: Any) -> dict[str, list[str]]:
    """The retention tiers each backup fills now (none when the policy keeps nothing)."""
    from ..engine.retention import plan_backups

    try:
        decisions = plan_backups(refs, policy) if refs else []
    except ValueError:
        return {}
    return {d.backup_id: d.reasons for d in decisions if d.backup_id}
