"""`kotomi-backup list`: the complete backups at each destination, with the retention
tiers each one fills, how long each stays locked, and any whose objects are damaged or were
tampered with (engine/survey.py)."""

from __future__ import annotations

import argparse
import json
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
            err.print(f"kotomi-backup: cannot list {at.error_line()}")
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
                "lock_mode": survey.guard.mode,  # compliance, governance, or null: no locks
            }
        )
        if args.json:
            continue
        table = Table(title=f"{settings.name} at {url}", title_justify="left")
        columns = ["backup id", "created (UTC)", "database", "stored", "encryption", "verify"]
        if survey.guard.mode is not None:
            columns.append("locked until")
        for col in (*columns, "tiers"):
            table.add_column(col)
        for m in listing.backups:
            marks = [
                w
                for w, found in (("DAMAGED", damaged), ("TAMPERED", tampered))
                if m.backup_id in found
            ]
            row = [
                " ".join([m.backup_id, *marks]),
                m.created_at,
                readable_size(m.db_size),
                f"{readable_size(m.stored_bytes)} paged"
                if m.is_paged
                else readable_size(m.archive.size),
                m.archive.encryption,
                f"{m.verify.mode} {m.verify.result}",
            ]
            if survey.guard.mode is not None:
                until = locks[m.backup_id]
                row.append(f"{until:%Y-%m-%d %H:%M}" if until else "NOT LOCKED")
            row.append(", ".join(survey.tiers(m.backup_id)) or "-")
            table.add_row(*row)
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
        for backup_id, problem in tampered.items():
            out.print(
                f"  TAMPERED {backup_id}: {problem}; restores read the versions it recorded, "
                "but someone with write access changed the bucket: find out who (access logs) "
                "before trusting it; it fills no retention slot"
            )
    if args.json:
        emit_json({"name": settings.name, "destinations": report})
    if misconfigured(results):
        return EXIT_USAGE
    return EXIT_FAILED if failed(results) else EXIT_OK


def _when(moment: Any) -> str | None:
    from ..engine.manifest import rfc3339

    return rfc3339(moment) if moment is not None else None
