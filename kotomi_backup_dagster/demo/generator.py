"""Deterministic demo databases shaped like a real Kotomi file, from a few KB to many GB.

``generate_demo_database`` writes realistic rows into all 14 tables of Kotomi's schema (see
:mod:`.schema`) until the file reaches the requested size.  The same seed and size always give
the same rows: every id, name, text and timestamp comes from one ``random.Random(seed)`` and a
base date derived from the seed, never from the clock.

Speed and memory: rows are generated as a stream, a page (of a site) at a time, and inserted in
batches with ``executemany``, one transaction per batch, with ``synchronous=OFF`` and no journal
while the file is private.  Only bounded pools (recent users, one page's comments) are kept in
memory, so memory does not grow with the size.  The file is written under a temporary name next
to the target and moved into place at the end, switched to WAL mode and checkpointed.

Plain Python and the standard library only: no Dagster import.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..engine.kotomi import KOTOMI_TABLES
from .rows import Comment, Row, comment_notification
from .schema import apply_kotomi_schema, insert_sql
from .values import format_default_timestamp, format_go_timestamp, random_uuid4
from .words import ESSENTIAL_REACTIONS, REACTIONS, SECTIONS, SITE_NAMES, WORDS, paragraph, person

__all__ = ["DemoStats", "generate_demo_database"]


@dataclass(frozen=True)
class DemoStats:
    """What :func:`generate_demo_database` wrote."""

    path: Path
    size_bytes: int
    """Size of the database file on disk (its -wal is absent or empty)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Row count of each of the 14 tables."""
    seed: int = 0
    page_size: int = 4096
    """SQLite page size: 4096 like Kotomi, smaller only for tiny targets (see below)."""


Rows = dict[str, list[Row]]

_STATUSES = ("approved",) * 14 + ("pending",) * 4 + ("rejected",) * 2

# Sizes below this use small SQLite pages: the empty schema alone (14 tables, their indexes and
# sqlite_master) takes about 45 pages, i.e. ~180 KB at Kotomi's 4096-byte pages.
_SMALL_PAGE_LIMIT = 4 * 1024 * 1024
_TINY_PAGE_LIMIT = 512 * 1024
# Below this the fixed part is trimmed (2 sites, 3 reactions each) so ~50 KB is reachable.
_COMPACT_LIMIT = 256 * 1024

_GENERATION_CACHE_KIB = 128 * 1024  # fixed page cache while generating: memory stays bounded
_MAX_PAGES_PER_BATCH = 400  # ~4000 comments, a few MB of rows


def _page_size_for(size_bytes: int) -> int:
    if size_bytes >= _SMALL_PAGE_LIMIT:
        return 4096
    if size_bytes >= _TINY_PAGE_LIMIT:
        return 1024
    return 512


class _Generator:
    """Streams Kotomi-like rows from one seeded rng; memory bounded by its pools."""

    USER_POOL = 3000

    def __init__(self, seed: int, *, compact: bool = False) -> None:
        self.rng = rng = random.Random(seed)
        self.compact = compact
        # A fixed base date derived from the seed: 2022-01-01 plus up to two years.
        base = int(datetime(2022, 1, 1, tzinfo=UTC).timestamp())
        self.clock = base + rng.randrange(2 * 365 * 86400)
        # The Go driver writes local time with its offset; one offset per server.
        self.go_offset = rng.choice((0, 0, 0, 60, 120, -300, -420, 540))
        self.admins: list[tuple[str, str]] = []
        self.sites: list[tuple[str, str, str]] = []  # (id, auth_mode, domain)
        self.site_weights: list[float] = []
        self.reactions: dict[str, tuple[list[str], list[str]]] = {}  # site -> (page, comment)
        self.user_pool: dict[str, list[tuple[str, str, str]]] = {}
        self.page_counter: dict[str, int] = {}
        self.first_page = True

    # -- values -------------------------------------------------------------------------------

    def tick(self, low: int, high: int) -> int:
        self.clock += self.rng.randint(low, high)
        return self.clock

    def ts(self, epoch: int) -> str:
        """A timestamp in one of the two formats Kotomi's file holds."""
        rng = self.rng
        if rng.random() < 0.5:
            return format_default_timestamp(epoch)
        return format_go_timestamp(epoch, rng.randrange(1_000_000_000), self.go_offset)

    def go_ts(self, epoch: int) -> str:
        return format_go_timestamp(epoch, self.rng.randrange(1_000_000_000), self.go_offset)

    def uuid(self) -> str:
        return random_uuid4(self.rng)

    def hex(self, nbytes: int) -> str:
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    # -- the fixed part: owners, sites and their configuration ---------------------------------

    def base_rows(self) -> Rows:
        rng = self.rng
        out: Rows = {t: [] for t in KOTOMI_TABLES}
        for i in range(2 if self.compact else rng.randint(2, 3)):
            name, _ = person(rng)
            admin_id = self.uuid()
            email = f"admin{i}@{rng.choice(SITE_NAMES)[1]}.example.org"
            created = self.tick(3600, 86400)
            out["admin_users"].append(
                (admin_id, email, name, f"auth0|{self.hex(12)}", self.ts(created), self.ts(created))
            )
            self.admins.append((admin_id, email))
        for i, (site_name, slug) in enumerate(
            SITE_NAMES[: 2 if self.compact else rng.randint(3, 4)]
        ):
            site_id = self.uuid()
            owner_id, owner_email = self.admins[i % len(self.admins)]
            domain = f"{slug}.example.org"
            auth_mode = "kotomi" if i == 1 else "external"
            created = self.tick(3600, 86400)
            c_ts = self.ts(created)
            out["sites"].append(
                (site_id, owner_id, site_name, domain, f"Comments for {domain}", c_ts, c_ts)
            )
            self.sites.append((site_id, auth_mode, domain))
            self.site_weights.append(1.0 / (i + 1))
            self.page_counter[site_id] = 0
            self.user_pool[site_id] = []
            page_kinds: list[str] = []
            comment_kinds: list[str] = []
            for name, emoji, kind in REACTIONS:
                essential = name in ESSENTIAL_REACTIONS
                if (self.compact or rng.random() < 0.15) and not essential:
                    continue
                rid = self.uuid()
                out["allowed_reactions"].append((rid, site_id, name, emoji, kind, c_ts, c_ts))
                if kind in ("page", "both"):
                    page_kinds.append(rid)
                if kind in ("comment", "both"):
                    comment_kinds.append(rid)
            self.reactions[site_id] = (page_kinds, comment_kinds)
            for _ in range(
                1 if self.compact else 2
            ):  # early readers (Kotomi-auth ones on that site)
                self._new_user(out, site_id, auth_mode, self.tick(60, 3600))
            out["moderation_config"].append(
                (
                    self.uuid(),
                    site_id,
                    int(rng.random() < 0.6),
                    round(rng.uniform(0.7, 0.95), 2),
                    round(rng.uniform(0.1, 0.4), 2),
                    1,
                    1,
                    int(rng.random() < 0.7),
                    int(rng.random() < 0.3),
                    c_ts,
                    c_ts,
                )
            )
            validation = "hmac" if auth_mode == "kotomi" else rng.choice(("hmac", "rsa", "jwks"))
            out["site_auth_configs"].append(
                (
                    self.uuid(),
                    site_id,
                    auth_mode,
                    validation,
                    self.hex(32) if validation == "hmac" else None,
                    (
                        "-----BEGIN PUBLIC KEY-----\n"
                        + self.hex(128)
                        + "\n-----END PUBLIC KEY-----"
                        if validation == "rsa"
                        else None
                    ),
                    f"https://auth.{domain}/.well-known/jwks.json"
                    if validation == "jwks"
                    else None,
                    f"https://auth.{domain}/",
                    f"kotomi:{slug}",
                    rng.choice((30, 60, 120, 300)),
                    c_ts,
                    c_ts,
                )
            )
            sendgrid = rng.random() < 0.4
            out["notification_settings"].append(
                (
                    self.uuid(),
                    site_id,
                    1,
                    "sendgrid" if sendgrid else "smtp",
                    f"comments@{domain}",
                    site_name,
                    owner_email,
                    None if sendgrid else f"smtp.{domain}",
                    None if sendgrid else 587,
                    None if sendgrid else f"comments@{domain}",
                    None if sendgrid else self.hex(10),
                    1,
                    f"SG.{self.hex(11)}.{self.hex(21)}" if sendgrid else None,
                    1,
                    int(rng.random() < 0.8),
                    1,
                    owner_email,
                    c_ts,
                    c_ts,
                )
            )
        return out

    # -- the growing part: one page of one site at a time ---------------------------------------

    def _new_user(self, out: Rows, site_id: str, auth_mode: str, first_seen: int) -> None:
        rng = self.rng
        name, email = person(rng)
        if auth_mode == "kotomi":
            user_id = self.uuid()
            created = self.ts(first_seen)
            out["kotomi_auth_users"].append(
                (
                    user_id,
                    site_id,
                    email,
                    f"auth0|{self.hex(12)}",
                    name,
                    f"https://avatars.example.com/{user_id[:8]}.png",
                    int(rng.random() < 0.8),
                    created,
                    created,
                )
            )
            start = first_seen
            for _ in range(rng.randint(1, 4)):  # sessions are never cleaned up
                start += rng.randint(600, 20 * 86400)
                out["kotomi_auth_sessions"].append(
                    (
                        self.uuid(),
                        user_id,
                        site_id,
                        self.hex(32),
                        self.hex(32),
                        self.go_ts(start + 86400),
                        self.go_ts(start + 30 * 86400),
                        self.ts(start),
                    )
                )
        else:
            user_id = rng.choice((f"user_{self.hex(8)}", self.uuid(), f"github|{self.hex(8)}"))
        last_seen = first_seen + rng.randint(0, 90 * 86400)
        out["users"].append(
            (
                site_id,
                user_id,
                name,
                email if rng.random() < 0.9 else None,
                f"https://avatars.example.com/{user_id[-8:]}.png" if rng.random() < 0.7 else None,
                f"https://social.example.com/@{name.split()[0].lower()}"
                if rng.random() < 0.2
                else None,
                int(rng.random() < 0.6),
                json.dumps(["user"] if rng.random() < 0.97 else ["user", "moderator"]),
                self.ts(first_seen),
                self.go_ts(last_seen),
                self.ts(first_seen),
                self.go_ts(last_seen),
                rng.randint(0, 50) if rng.random() < 0.3 else 0,
            )
        )
        pool = self.user_pool[site_id]
        entry = (user_id, name, email)
        if len(pool) < self.USER_POOL:
            pool.append(entry)
        else:
            pool[rng.randrange(self.USER_POOL)] = entry

    def _pick_user(self, out: Rows, site_id: str, auth_mode: str) -> tuple[str, str, str]:
        pool = self.user_pool[site_id]
        if not pool or self.rng.random() < 0.12:
            self._new_user(out, site_id, auth_mode, self.clock)
        return self.rng.choice(pool)

    def page_rows(self, out: Rows) -> None:
        """Append one page of one site, its comments, reactions and notifications to ``out``."""
        rng = self.rng
        first = self.first_page
        self.first_page = False
        site_idx = 0 if first else rng.choices(range(len(self.sites)), self.site_weights)[0]
        site_id, auth_mode, domain = self.sites[site_idx]
        counter = self.page_counter[site_id] = self.page_counter[site_id] + 1
        section = rng.choice(SECTIONS)
        slug = "-".join(rng.choices(WORDS, k=rng.randint(2, 5)))
        page_id = self.uuid()
        created = self.tick(60, 7200)
        out["pages"].append(
            (
                page_id,
                site_id,
                f"/{section}/{slug}-{counter}/",
                slug.replace("-", " ").title(),
                self.ts(created),
                self.ts(created),
            )
        )
        page_kinds, comment_kinds = self.reactions[site_id]
        n_comments = 5 if first else min(1 + int(rng.expovariate(1 / 7)), 200)
        comment_ids: list[str] = []
        admin_id = self.admins[site_idx % len(self.admins)][0]
        owner_email = self.admins[site_idx % len(self.admins)][1]
        for i in range(n_comments):
            user = self._pick_user(out, site_id, auth_mode)
            comment_id = self.uuid()
            if first:  # the first page shows every case even in a tiny database
                status = ("approved", "pending", "rejected", "approved", "approved")[i]
                parent_id = comment_ids[0] if i == 3 else None
            else:
                status = rng.choice(_STATUSES)
                parent_id = rng.choice(comment_ids) if comment_ids and rng.random() < 0.35 else None
            posted = self.tick(5, 900)
            moderated = None
            if status != "pending":
                at = self.go_ts(posted + rng.randint(1, 86400))
                moderated = (admin_id if rng.random() < 0.6 else "auto-moderation", at)
            posted_ts = self.ts(posted)
            text = paragraph(rng, 1, 5)
            comment = Comment.posted(
                comment_id, site_id, page_id, user, text, parent_id, status, moderated, posted_ts
            )
            out["comments"].append(comment)
            comment_ids.append(comment_id)
            # Comment reactions.
            if comment_kinds and (first or rng.random() < 0.45):
                pool = self.user_pool[site_id]
                for reactor in rng.sample(pool, min(len(pool), 1 + int(rng.expovariate(0.6)))):
                    out["reactions"].append(
                        (
                            self.uuid(),
                            None,
                            comment_id,
                            rng.choice(comment_kinds),
                            reactor[0],
                            self.ts(posted + rng.randint(10, 86400)),
                        )
                    )
            # Notifications: queued (the worker sends and later deletes them) and logged.
            if first or rng.random() < 0.3:
                roll = rng.random()
                q_status = "sent" if roll < 0.8 else ("failed" if roll < 0.9 else "pending")
                sent = posted + rng.randint(1, 60)
                error = "smtp: connection refused" if q_status == "failed" else None
                notice = comment_notification(
                    self.uuid(),
                    comment,
                    recipient=owner_email,
                    where=domain,
                    status=q_status,
                    attempts=0 if q_status == "pending" else (1 if q_status == "sent" else 3),
                    error=error,
                    created_at=format_default_timestamp(posted),
                    sent_at=self.go_ts(sent) if q_status == "sent" else None,
                    updated_at=self.go_ts(sent),
                )
                out["notification_queue"].append(notice)
                if q_status != "pending":
                    notification_id, _, kind, _, subject = notice[:5]
                    out["notification_log"].append(
                        (
                            self.uuid(),
                            site_id,
                            notification_id,
                            kind,
                            owner_email,
                            subject,
                            q_status,
                            "smtp",
                            error,
                            self.ts(sent),
                        )
                    )
        # Page reactions.
        if page_kinds and (first or rng.random() < 0.6):
            pool = self.user_pool[site_id]
            for reactor in rng.sample(pool, min(len(pool), 1 + int(rng.expovariate(0.4)))):
                out["reactions"].append(
                    (
                        self.uuid(),
                        page_id,
                        None,
                        rng.choice(page_kinds),
                        reactor[0],
                        self.ts(created + rng.randint(60, 30 * 86400)),
                    )
                )


def _build(gen: _Generator, n_pages: int) -> Rows:
    out: Rows = {t: [] for t in KOTOMI_TABLES}
    for _ in range(n_pages):
        gen.page_rows(out)
    return out


def _write(conn: sqlite3.Connection, rows: Rows, counts: dict[str, int]) -> None:
    conn.execute("BEGIN")
    for table in KOTOMI_TABLES:
        batch = rows[table]
        if batch:
            conn.executemany(insert_sql(table), batch)
            counts[table] += len(batch)
    conn.execute("COMMIT")


def _file_bytes(conn: sqlite3.Connection) -> int:
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count) * int(page_size)


def _publish(tmp: Path, path: Path) -> None:
    """Move the finished file to ``path`` without ever overwriting an existing file."""
    try:
        os.link(tmp, path)  # fails with FileExistsError if path appeared meanwhile
    except FileExistsError:
        raise FileExistsError(
            f"refusing to overwrite {path}: it appeared while the demo database was generated"
        ) from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise FileExistsError(f"refusing to overwrite existing file {path}") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def generate_demo_database(
    path: str | os.PathLike[str], *, size_bytes: int, seed: int = 0
) -> DemoStats:
    """Create a Kotomi-like SQLite database of about ``size_bytes`` at ``path``.

    All 14 tables get realistic rows: admin users owning a few sites (with allowed reactions,
    moderation, auth and notification settings, secrets included), pages, users, threaded
    comments with pending/approved/rejected statuses and both timestamp formats, page and
    comment reactions, Kotomi-auth users with their sessions, and the notification queue and
    log.  The result is in WAL mode with no pending WAL content, within ~10 % of
    ``size_bytes``; targets below ~50 KB give the minimal database (~48 KB), which is larger.
    Targets under 4 MB use SQLite pages smaller than Kotomi's 4096 bytes so that tiny sizes are
    reachable.  Deterministic: the same ``seed`` and ``size_bytes`` give the same rows.

    Raises :class:`FileExistsError` if ``path`` (or a leftover ``-wal``/``-journal`` of it)
    exists: a demo never overwrites anything.
    """
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be positive, got {size_bytes}")
    target = Path(path)
    for candidate in (target, Path(f"{target}-wal"), Path(f"{target}-journal")):
        if candidate.exists():
            raise FileExistsError(
                f"refusing to overwrite existing file {candidate}: "
                "generate_demo_database only creates new files"
            )
    if not target.parent.is_dir():
        raise FileNotFoundError(f"directory {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.generating-{os.getpid()}")
    page_size = _page_size_for(size_bytes)
    counts = dict.fromkeys(KOTOMI_TABLES, 0)
    try:
        _remove_sqlite_files(tmp)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            for pragma in (
                f"page_size={page_size}",
                "journal_mode=OFF",  # private file until published: no journal needed
                "synchronous=OFF",
                f"cache_size=-{_GENERATION_CACHE_KIB}",
                "temp_store=MEMORY",
                "locking_mode=EXCLUSIVE",
                "foreign_keys=OFF",
            ):
                conn.execute(f"PRAGMA {pragma}").fetchall()
            apply_kotomi_schema(conn)
            gen = _Generator(seed, compact=size_bytes < _COMPACT_LIMIT)
            _write(conn, gen.base_rows(), counts)
            _grow(conn, gen, size_bytes, counts)
            # Become a Kotomi file: WAL mode, fully checkpointed, lock released.
            conn.execute("PRAGMA locking_mode=NORMAL").fetchall()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"could not switch the demo database to WAL (got {mode})")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):  # closing the last connection checkpointed the WAL
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        _publish(tmp, target)
    except BaseException:
        _remove_sqlite_files(tmp)
        raise
    return DemoStats(
        path=target,
        size_bytes=target.stat().st_size,
        rows=counts,
        seed=seed,
        page_size=page_size,
    )


def _grow(
    conn: sqlite3.Connection, gen: _Generator, size_bytes: int, counts: dict[str, int]
) -> None:
    """Insert batches of pages until the file reaches ``size_bytes``.

    The number of pages per batch is chosen from the bytes per page seen so far so that the
    last batches are small and the file stops close to the target.  Content does not depend on
    where batches start or end: rows come from one stream.
    """
    start = _file_bytes(conn)
    written_pages = 0
    n = 1  # the first batch is the showcase page, so tiny databases have every case
    while True:
        _write(conn, _build(gen, n), counts)
        written_pages += n
        size = _file_bytes(conn)
        remaining = size_bytes - size
        if remaining <= size_bytes * 0.02:
            return
        per_page = max((size - start) / written_pages, 1.0)
        # Fill half of the gap at a time near the end (never more than the batch cap).
        # Batches at most double, so the estimate settles before the batches get large.
        n = max(1, min(_MAX_PAGES_PER_BATCH, 2 * written_pages, int(remaining / per_page * 0.5)))


def _remove_sqlite_files(base: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{base}{suffix}").unlink(missing_ok=True)
