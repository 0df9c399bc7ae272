"""`kotomi-backup`: the engine from the command line, with or without Dagster running.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration. Every failure
is one line on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import __version__
from .engine.errors import BackupError, ConfigError, DiskFull, is_no_space
from .engine.redaction import redact
from .engine.settings import BackupSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Piped output is not cut to 80 columns: backup ids and URLs must stay whole.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors, kept to one line like ours.
        sys.stderr.write(f"kotomi-backup: {message} (see kotomi-backup --help)\n")
        raise SystemExit(EXIT_USAGE)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def _byte_progress(
    label: str, total: int | None, enabled: bool
) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _settings(args: argparse.Namespace, **extra: Any) -> BackupSettings:
    from .engine.stores import split_urls

    url = getattr(args, "to", None) or getattr(args, "from_", None)
    return BackupSettings.from_env(
        db_path=Path(args.db).expanduser() if getattr(args, "db", None) else None,
        urls=tuple(split_urls(url)) if url else None,
        name=getattr(args, "name", None),
        **extra,
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from .engine.backup import run_backup

    settings = _settings(
        args, verify_mode=args.verify, backup_format=args.format, deadline=args.deadline
    )
    db = settings.require_db()
    size = db.stat().st_size if db.exists() else 0
    with _byte_progress("archive", size, not args.json) as progress:
        result = run_backup(settings, progress=progress)
    m = result.manifest
    if args.json:
        _emit_json(
            {
                "backup_id": m.backup_id,
                "name": m.name,
                "manifest": json.loads(m.to_json()),
                "destinations": [asdict(o) for o in result.outcomes],
                "snapshot_method": result.snapshot.method,
                "seconds": {
                    "snapshot": round(result.snapshot.seconds, 3),
                    "verify": round(result.verify.seconds, 3),
                    "archive": round(result.archive_seconds, 3),
                },
            }
        )
        return EXIT_OK
    if m.is_paged:
        out.print(
            f"backup {m.backup_id} of {m.name}: {_human(m.db_size)}, paged "
            f"(encryption {m.archive.encryption})"
        )
    else:
        out.print(
            f"backup {m.backup_id} of {m.name}: {_human(m.db_size)} -> {_human(m.archive.size)}"
            f" ({m.archive.compression}, encryption {m.archive.encryption})"
        )
    out.print(f"  verify: {result.verify.summary()}")
    for o in result.outcomes:
        if o.already_there:
            out.print(f"  already at {o.url}")
        elif m.is_paged and o.manifest is not None:
            paged = o.manifest.paged or {}
            base = paged.get("base") or "none, every page stored"
            out.print(
                f"  stored at {o.url}: {paged.get('new_pages', 0)} new pages in "
                f"{len(paged.get('new_packs', []))} pack(s), {_human(o.bytes)} (base {base})"
            )
        else:
            out.print(f"  stored at {o.url}/{m.archive.key}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from .engine.catalog import list_backups
    from .engine.notify import without_repeated_prefix
    from .engine.prune import backup_refs
    from .engine.stores import open_store, safe_url

    settings = _settings(args)
    failed = misconfigured = False
    report: list[dict[str, Any]] = []
    for url in settings.require_urls():
        store = open_store(url)
        try:
            listing = list_backups(store, settings.name)
            refs = backup_refs(store, settings.name, listing)
        except BackupError as exc:
            failed = True
            misconfigured = misconfigured or isinstance(exc, ConfigError)
            report.append({"url": safe_url(url), "error": str(exc), "backups": []})
            err.print(
                "kotomi-backup: cannot list "
                + without_repeated_prefix(f"{safe_url(url)}: {exc}").removeprefix("destination ")
            )
            continue
        tiers = _tiers(refs)
        damaged = {r.backup_id: r.problem for r in refs if r.problem}
        report.append(
            {
                "url": safe_url(url),
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
        table = Table(title=f"{settings.name} at {safe_url(url)}", title_justify="left")
        columns = ("backup id", "created (UTC)", "database", "stored", "encryption", "verify")
        for col in (*columns, "tiers"):
            table.add_column(col)
        for m in listing.backups:
            table.add_row(
                f"{m.backup_id} DAMAGED" if m.backup_id in damaged else m.backup_id,
                m.created_at,
                _human(m.db_size),
                f"{_human(m.stored_bytes)} paged" if m.is_paged else _human(m.archive.size),
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
        _emit_json({"name": settings.name, "destinations": report})
    if misconfigured:
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


def _tiers(refs: Sequence[Any]) -> dict[str, list[str]]:
    """The retention tiers each backup fills now (empty when no valid policy is set)."""
    from .engine.retention import RetentionPolicy, plan_backups

    try:
        decisions = plan_backups(refs, RetentionPolicy.from_env()) if refs else []
    except ValueError:
        return {}
    return {d.backup_id: d.reasons for d in decisions if d.backup_id}


def cmd_prune(args: argparse.Namespace) -> int:
    from .engine.notify import without_repeated_prefix
    from .engine.prune import prune_store
    from .engine.retention import RetentionPolicy
    from .engine.stores import open_store, safe_url

    settings = _settings(args)
    try:
        policy = RetentionPolicy.from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    results, failures = [], []
    for url in settings.require_urls():
        try:
            results.append(
                prune_store(
                    open_store(url),
                    settings.name,
                    policy,
                    dry_run=args.dry_run,
                    identities=settings.identities(),
                    recipients_text=settings.age_recipients,
                )
            )
        except ConfigError:
            raise
        except BackupError as exc:  # one store failing does not stop the others
            failures.append(without_repeated_prefix(f"{safe_url(url)}: {exc}"))
    if args.json:
        _emit_json(
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
                f"  {len(r.kept)} kept, {len(r.removed)} {verb} ({_human(r.bytes_freed)}); "
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
    for failure in failures:
        err.print(f"kotomi-backup: error: prune failed at {failure}")
    return EXIT_FAILED if failures else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .engine.checkup import verify_path

    settings = BackupSettings.from_env()
    result = verify_path(
        Path(args.path).expanduser(),
        mode="full" if args.full else "quick",
        identity=settings.age_identity,
        profile=settings.profile,
    )
    if args.json:
        _emit_json(result.to_dict())
    else:
        stream = out if result.ok else err
        for line in result.lines():
            stream.print(line)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import generate_demo_database
    from .engine.backup import run_backup

    directory = Path(args.dir).expanduser().resolve()
    db = directory / "kotomi.db"
    backups = directory / "backups"
    if db.exists():
        err.print(f"using the existing demo database {db}")
    else:
        directory.mkdir(parents=True, exist_ok=True)
        generate_demo_database(db, size_bytes=args.size_mb * 1_000_000, seed=args.seed)
    if args.db_only:
        out.print(f"demo database: {db}")
        return EXIT_OK
    settings = BackupSettings.from_env(
        db_path=db, urls=(str(backups),), name="kotomi", staging_dir=directory / "staging"
    )
    result = run_backup(settings)
    m = result.manifest
    if args.json:
        _emit_json(
            {
                "db": str(db),
                "backups": str(backups),
                "backup_id": m.backup_id,
                "manifest": json.loads(m.to_json()),
            }
        )
        return EXIT_OK
    out.print(f"demo database: {db} ({_human(m.db_size)}, {sum(m.tables.values())} rows)")
    out.print(f"backup {m.backup_id}: {backups / m.archive.key}")
    out.print(f"list it:    kotomi-backup list --to {backups}")
    out.print(f"restore it: zstd -d < {backups / m.archive.key} > restored.db")
    return EXIT_OK


def _debug_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's default must not undo `kotomi-backup --debug backup`.
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print tracebacks on failure",
    )


def cmd_restore(args: argparse.Namespace) -> int:
    from .engine.restore import parse_time, restore_database
    from .engine.stores import open_store, safe_url

    settings = _settings(args)
    target = settings.require_db().expanduser().resolve()
    before = parse_time(args.before) if args.before else None
    if before is not None and args.backup != "latest":
        raise ConfigError("give either a backup id or --before TIME, not both")
    stores = [open_store(u) for u in settings.require_urls()]
    with _byte_progress("restore", None, not args.json) as progress:
        result = restore_database(
            stores,
            settings.name,
            target,
            which=args.backup,
            before=before,
            identities=settings.identities(),
            keep_copy=not args.no_keep,
            force=args.force,
            profile=settings.profile,
            progress=progress,
            force_full_check=args.verify == "full",
        )
    m = result.manifest
    for skipped in result.skipped:
        err.print(
            f"kotomi-backup: warning: skipped a newer backup, its manifest is unreadable: {skipped}"
        )
    if args.json:
        _emit_json(
            {
                "backup_id": m.backup_id,
                "skipped_unreadable": list(result.skipped),
                "source": safe_url(result.source_url),
                "target": str(result.target),
                "kept_copy": str(result.kept_copy) if result.kept_copy else None,
                "removed": result.removed,
                "db_sha256": m.db_sha256,
                "tables": result.report.tables,
                "check": {"mode": result.check.mode, "why": result.check.why},
                "seconds": round(result.seconds, 3),
            }
        )
        return EXIT_OK
    pragma = "integrity_check" if result.check.mode == "full" else "quick_check"
    out.print(f"restored {m.backup_id} ({m.created_at}) from {safe_url(result.source_url)}")
    out.print(f"  into {result.target}: sha256 matches the manifest, {pragma} ok, row counts match")
    out.print(f"  {pragma}: {result.check.why}")
    if result.kept_copy:
        out.print(f"  the previous database is kept as {result.kept_copy}")
    if result.removed:
        out.print(f"  removed stale {', '.join(result.removed)}")
    out.print("  start Kotomi again and check: curl -fsS localhost:8080/healthz")
    return EXIT_OK


def cmd_drill(args: argparse.Namespace) -> int:
    from .engine.drill import drill_store
    from .engine.stores import open_store, safe_url

    settings = _settings(args)
    identities = settings.identities()
    records: list[dict[str, Any]] = []
    for url in settings.require_urls():
        drilled = drill_store(
            open_store(url),
            settings.name,
            args.backup,
            identities=identities,
            scratch_dir=settings.staging_dir,
            profile=settings.profile,
        )
        records += [{"url": safe_url(url), **asdict(record)} for _, record in drilled]
    if args.json:
        _emit_json({"name": settings.name, "drills": records})
    else:
        table = Table(title=f"restore drills of {settings.name}", title_justify="left")
        for col in ("destination", "backup id", "result", "RTO (s)", "problems"):
            table.add_column(col)
        for r in records:
            table.add_row(
                r["url"],
                r["backup_id"],
                "ok" if r["ok"] else "FAILED",
                f"{r['rto_seconds']:.2f}",
                "; ".join(r["problems"]),
            )
        out.print(table)
    failed = [r for r in records if not r["ok"]]
    if failed:
        err.print(f"kotomi-backup: error: {len(failed)} of {len(records)} drills failed")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    from .engine.recover import recover_database

    report = recover_database(Path(args.broken).expanduser(), Path(args.out).expanduser())
    if args.json:
        _emit_json(
            {
                "out": str(report.out),
                "method": report.method,
                "saved_rows": report.saved,
                "tables": {n: asdict(t) for n, t in report.tables.items()},
                "notes": report.notes,
            }
        )
        return EXIT_OK
    table = Table(title=f"salvaged into {report.out} ({report.method})", title_justify="left")
    for col in ("table", "rows saved", "unreadable ranges", "first error"):
        table.add_column(col)
    for t in report.tables.values():
        table.add_row(t.name, str(t.saved), str(t.errors), t.first_error or "")
    out.print(table)
    for note in report.notes:
        out.print(f"  {note}")
    out.print("  check it before use: kotomi-backup verify " + str(report.out) + " --full")
    return EXIT_OK


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kotomi-backup", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"kotomi-backup {__version__}")
    parser.add_argument("--debug", action="store_true", help="print tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, url_flag: str | None) -> None:
        if url_flag:
            p.add_argument(
                url_flag,
                dest=url_flag.strip("-").replace("from", "from_"),
                metavar="URL",
                help="destination(s), comma-separated (default: KOTOMI_BACKUP_URL)",
            )
        p.add_argument("--name", help="backup name (default: KOTOMI_BACKUP_NAME or kotomi)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        _debug_flag(p)

    p = sub.add_parser("backup", help="snapshot, verify, compress (+encrypt) and upload")
    p.add_argument("--db", metavar="PATH", help="database file (default: KOTOMI_DB_PATH)")
    p.add_argument(
        "--verify",
        choices=("quick", "full"),
        default=None,
        help="quick_check (default) or full integrity_check",
    )
    p.add_argument(
        "--format",
        choices=("full", "paged"),
        default=None,
        help="full archive (default) or paged: only pages the destination lacks "
        "(default: KOTOMI_BACKUP_FORMAT or full)",
    )
    p.add_argument(
        "--deadline",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="give up on the destinations once the backup has run this long "
        "(default: KOTOMI_BACKUP_DEADLINE, or none)",
    )
    common(p, "--to")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("list", help="list the complete backups at each destination")
    common(p, "--to")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("restore", help="restore a backup over (or into) a database file")
    p.add_argument("backup", metavar="ID|latest", help="a backup id, or latest")
    p.add_argument("--db", metavar="PATH", help="database to replace (default: KOTOMI_DB_PATH)")
    p.add_argument("--before", metavar="RFC3339", help="the newest backup created before this")
    p.add_argument("--force", action="store_true", help="restore even if the database is open")
    p.add_argument(
        "--verify",
        choices=("auto", "full"),
        default="auto",
        help="auto (default): a quick_check when these bytes passed a full integrity_check "
        "before (backup with --verify full, or a passing drill), else integrity_check; "
        "full: always integrity_check",
    )
    p.add_argument(
        "--no-keep",
        action="store_true",
        help="do not keep the current database as <db>.before-restore-<time>",
    )
    common(p, "--from")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("drill", help="restore into scratch space and check, recording the drill")
    p.add_argument("backup", metavar="ID|latest|all", nargs="?", default="latest")
    common(p, "--from")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("recover", help="salvage the readable rows of a corrupt database")
    p.add_argument("broken", metavar="BROKEN_DB")
    p.add_argument("out", metavar="OUT_DB")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _debug_flag(p)
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("prune", help="remove backups outside the retention tiers")
    p.add_argument("--dry-run", action="store_true", help="show the plan, remove nothing")
    common(p, "--to")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("verify", help="check a database file, an archive or a backup directory")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--full", action="store_true", help="integrity_check instead of quick_check")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _debug_flag(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="make a demo Kotomi database and back it up")
    p.add_argument("--dir", default="kotomi-demo", help="where (default: ./kotomi-demo)")
    p.add_argument("--size-mb", type=int, default=5, help="demo database size (default 5 MB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db-only", action="store_true", help="only make the database, no backup")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _debug_flag(p)
    p.set_defaults(func=cmd_demo)
    return parser


INTERRUPTED = {
    "backup": "nothing was listed as a backup",
    "restore": "the database was not replaced (a restore swaps it in only as its last step)",
    "drill": "no drill was recorded for the backup being drilled",
    "prune": "every backup still listed is whole (removal deletes the manifest first)",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Everything it writes (lines, tables, --json, tracebacks) passes
    through `redact`: no secret leaves the process, whatever went wrong."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Redacting(stdout), _Redacting(stderr)
    try:
        return _run(argv)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except BackupError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return _interrupted(args)
    except OSError as exc:
        if is_no_space(exc):  # a write the engine did not expect to fail: still one line
            return _fail(args, DiskFull(exc.filename or "a local disk"), EXIT_FAILED)
        return _fail(args, exc, EXIT_FAILED, unexpected=True)
    except Exception as exc:
        return _fail(args, exc, EXIT_FAILED, unexpected=True)
    except BaseException as exc:  # a native extension's panic (pyo3) is no Exception
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _interrupted(args)
        return _fail(args, exc, EXIT_FAILED, unexpected=True)


def _interrupted(args: argparse.Namespace) -> int:
    what = INTERRUPTED.get(args.command)
    sys.stderr.write(f"kotomi-backup: interrupted{f'; {what}' if what else ''}\n")
    return 130


class _Redacting(io.TextIOBase):
    """A text stream that writes what it is given with every secret removed."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._raw.flush()

    def isatty(self) -> bool:
        return self._raw.isatty()

    def fileno(self) -> int:
        return self._raw.fileno()


def _fail(args: argparse.Namespace, exc: BaseException, code: int, unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if unexpected:
        first = f"unexpected {type(exc).__name__}: {first} (run with --debug for details)"
    sys.stderr.write(f"kotomi-backup: error: {first}\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
