"""`kotomi-backup prune`: remove the backups outside the retention tiers, at each destination."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from rich.table import Table

from ..engine.manifest import rfc3339
from ..engine.readable import readable_size
from .arguments import add_common, settings_from
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_json, error_line, out

# What a Ctrl-C leaves, said when one stops this command.
INTERRUPTED = "every backup still listed is whole (removal deletes the manifest first)"


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("prune", help="remove backups outside the retention tiers")
    p.add_argument("--dry-run", action="store_true", help="show the plan, remove nothing")
    add_common(p, "--to")
    p.set_defaults(func=run, interrupted=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from ..engine.destinations import at_each_destination, failed, misconfigured, succeeded
    from ..engine.keeper.guard import KeeperSettings
    from ..engine.keeper.roles import require_role
    from ..engine.prune import prune_store
    from ..engine.retention import RetentionPolicy

    settings = settings_from(args)
    keeper = KeeperSettings.from_env()
    require_role(keeper, "prune")
    policy = RetentionPolicy.from_env()
    outcomes = at_each_destination(
        settings.require_urls(),
        lambda store: prune_store(
            store,
            settings.name,
            policy,
            dry_run=args.dry_run,
            identities=settings.identities(),
            recipients_text=settings.age_recipients,
            keeper=keeper,
            lock_memory=settings.lock_memory(store.url),
        ),
    )
    results = succeeded(outcomes)  # one destination failing does not stop the others
    failures = [at.error_line() for at in failed(outcomes)]
    if args.json:
        emit_json(
            {
                "name": settings.name,
                "policy": policy.describe(),
                "dry_run": args.dry_run,
                "destinations": [
                    {
                        "url": r.url,
                        "backups": [
                            {
                                "backup_id": p.manifest.backup_id,
                                "created_at": p.manifest.created_at,
                                "keep": p.keep,
                                "reasons": p.reasons,
                                "size": p.manifest.archive.size,
                                "damaged": p.problem,
                            }
                            for p in r.plan
                        ],
                        "removed": r.removed,
                        "bytes_freed": r.bytes_freed,
                        "incomplete_removed": r.orphans_removed,
                        "incomplete_kept": r.orphans_kept,
                        "packs": asdict(r.packs),
                        # Object lock (docs/immutability.md): what stays, and until when.
                        "retained": r.retained,
                        "locks": None
                        if r.locks is None
                        else {
                            "mode": r.locks.mode,
                            "checked": r.locks.checked,
                            "extended": [
                                {"key": k, "until": rfc3339(u)} for k, u in r.locks.extended
                            ],
                            "requests": r.locks.requests,
                        },
                    }
                    for r in results
                ],
                "errors": failures,
            }
        )
    else:
        for r in results:
            verb = "would remove" if args.dry_run else "removed"
            table = Table(
                title=f"{settings.name} at {r.url}: {policy.describe()}", title_justify="left"
            )
            for col in ("backup id", "created (UTC)", "decision", "why"):
                table.add_column(col)
            for p in r.plan:
                table.add_row(
                    p.manifest.backup_id,
                    p.manifest.created_at,
                    "keep" if p.keep else "remove",
                    ", ".join(p.reasons) or "no tier",
                )
            out.print(table)
            out.print(
                f"  {len(r.kept)} kept, {len(r.removed)} {verb} ({readable_size(r.bytes_freed)}); "
                f"{len(r.orphans_removed)} interrupted upload(s) {verb}"
            )
            packs = r.packs
            if packs.removed or packs.repacked:
                out.print(
                    f"  packs: {len(packs.removed)} no longer needed {verb}, "
                    f"{len(packs.repacked)} mostly-unused repacked into {len(packs.written)}"
                )
            for note in packs.notes:
                out.print(f"  note: {note}")
            if r.locks is not None:
                extend = "would extend" if args.dry_run else "extended"
                out.print(
                    f"  locks ({r.locks.mode}): {len(r.locks.extended)} {extend} to the end of "
                    f"their tiers, {r.locks.checked} checked"
                )
            for backup_id, why in r.retained.items():
                out.print(f"  {backup_id} stays, {why}: a later prune removes it")
            for pack in packs.retained:
                out.print(f"  pack {pack} stays until its lock ends")
    for failure in failures:
        error_line(f"prune failed at {failure}")
    if misconfigured(outcomes):
        return EXIT_USAGE
    return EXIT_FAILED if failures else EXIT_OK
