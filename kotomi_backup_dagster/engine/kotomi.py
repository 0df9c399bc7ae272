"""Kotomi's SQLite database, as the backup engine sees it.

Everything here is written from the facts in ``KOTOMI.md`` (Kotomi 0.1.0-beta.1): the 14 tables,
their constraints and indexes, the pragmas Kotomi opens the file with, and the shape of the
writes a live Kotomi makes.  It is used to build fixtures and demo databases, to simulate a
running service while a backup is taken, and to run a restore drill's read queries.

Plain Python and the standard library only: no Dagster import.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import deque
from datetime import UTC, datetime
from os import PathLike

__all__ = [
    "KOTOMI_MIGRATIONS",
    "KOTOMI_PRAGMAS",
    "KOTOMI_READ_QUERIES",
    "KOTOMI_TABLES",
    "SCHEMA_SQL",
    "KotomiWriter",
    "apply_kotomi_schema",
    "connect_like_kotomi",
    "format_default_timestamp",
    "format_go_timestamp",
    "random_uuid4",
    "read_query_params",
]

KOTOMI_TABLES: tuple[str, ...] = (
    "admin_users",
    "sites",
    "users",
    "pages",
    "comments",
    "allowed_reactions",
    "reactions",
    "moderation_config",
    "site_auth_configs",
    "kotomi_auth_users",
    "kotomi_auth_sessions",
    "notification_settings",
    "notification_queue",
    "notification_log",
)
"""The 14 tables of Kotomi's database, parents before children."""

# Timestamps are TEXT.  Columns with a default get SQLite's ``YYYY-MM-DD HH:MM:SS``; values the
# Go driver binds look like ``2006-01-02 15:04:05.999999999-07:00``.  Both occur in real files.
SCHEMA_SQL: str = """
CREATE TABLE IF NOT EXISTS admin_users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    auth0_sub TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS sites (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    domain TEXT,
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (owner_id) REFERENCES admin_users(id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS users (
    site_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    avatar_url TEXT,
    profile_url TEXT,
    is_verified BOOLEAN DEFAULT 0,
    roles TEXT,
    first_seen TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_seen TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    reputation_score INTEGER DEFAULT 0,
    PRIMARY KEY (site_id, id)
);
CREATE INDEX IF NOT EXISTS idx_users_site_email ON users(site_id, email);

CREATE TABLE IF NOT EXISTS pages (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    path TEXT NOT NULL,
    title TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (site_id) REFERENCES sites(id) ON DELETE CASCADE,
    UNIQUE (site_id, path)
);

CREATE TABLE IF NOT EXISTS comments (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    page_id TEXT NOT NULL,
    author TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_email TEXT,
    text TEXT NOT NULL,
    parent_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected')),
    moderated_by TEXT,
    moderated_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_comments_site_page ON comments(site_id, page_id);
CREATE INDEX IF NOT EXISTS idx_comments_parent ON comments(parent_id);
CREATE INDEX IF NOT EXISTS idx_comments_status ON comments(status);
CREATE INDEX IF NOT EXISTS idx_comments_author ON comments(author_id);

CREATE TABLE IF NOT EXISTS allowed_reactions (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    name TEXT NOT NULL,
    emoji TEXT NOT NULL,
    reaction_type TEXT NOT NULL DEFAULT 'comment'
        CHECK (reaction_type IN ('page', 'comment', 'both')),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (site_id) REFERENCES sites(id) ON DELETE CASCADE,
    UNIQUE (site_id, name, reaction_type)
);

CREATE TABLE IF NOT EXISTS reactions (
    id TEXT PRIMARY KEY,
    page_id TEXT,
    comment_id TEXT,
    allowed_reaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (page_id) REFERENCES pages(id) ON DELETE CASCADE,
    FOREIGN KEY (comment_id) REFERENCES comments(id) ON DELETE CASCADE,
    FOREIGN KEY (allowed_reaction_id) REFERENCES allowed_reactions(id) ON DELETE CASCADE,
    CHECK ((page_id IS NOT NULL AND comment_id IS NULL)
        OR (page_id IS NULL AND comment_id IS NOT NULL)),
    UNIQUE (page_id, comment_id, allowed_reaction_id, user_id)
);

CREATE TABLE IF NOT EXISTS moderation_config (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL UNIQUE,
    enabled BOOLEAN DEFAULT 0,
    auto_reject_threshold REAL DEFAULT 0.85,
    auto_approve_threshold REAL DEFAULT 0.3,
    check_spam BOOLEAN DEFAULT 1,
    check_offensive BOOLEAN DEFAULT 1,
    check_aggressive BOOLEAN DEFAULT 1,
    check_off_topic BOOLEAN DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS site_auth_configs (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL UNIQUE,
    auth_mode TEXT NOT NULL DEFAULT 'external',
    jwt_validation_type TEXT,
    jwt_secret TEXT,
    jwt_public_key TEXT,
    jwt_jwks_url TEXT,
    jwt_issuer TEXT,
    jwt_audience TEXT,
    token_expiration_buffer INTEGER DEFAULT 60,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS kotomi_auth_users (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    email TEXT NOT NULL,
    auth0_sub TEXT NOT NULL,
    name TEXT,
    avatar_url TEXT,
    is_verified BOOLEAN DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (site_id, auth0_sub)
);

CREATE TABLE IF NOT EXISTS kotomi_auth_sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    refresh_token TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMP NOT NULL,
    refresh_expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (user_id) REFERENCES kotomi_auth_users(id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS notification_settings (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL UNIQUE,
    enabled BOOLEAN DEFAULT 0,
    provider TEXT NOT NULL DEFAULT 'smtp',
    from_email TEXT,
    from_name TEXT,
    reply_to TEXT,
    smtp_host TEXT,
    smtp_port INTEGER,
    smtp_username TEXT,
    smtp_password TEXT,
    smtp_use_tls BOOLEAN DEFAULT 1,
    sendgrid_api_key TEXT,
    notify_new_comment BOOLEAN DEFAULT 1,
    notify_comment_reply BOOLEAN DEFAULT 1,
    notify_moderation BOOLEAN DEFAULT 1,
    owner_email TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS notification_queue (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    type TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER DEFAULT 0,
    error TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    sent_at TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS notification_log (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    notification_id TEXT,
    type TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT,
    status TEXT NOT NULL,
    provider TEXT,
    error TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""
"""Kotomi's schema: ``CREATE TABLE/INDEX IF NOT EXISTS``, run at every start.

``users.reputation_score`` comes last because real files get it from Kotomi's one ad-hoc
migration (``ALTER TABLE ... ADD COLUMN``), which appends it; see :data:`KOTOMI_MIGRATIONS`.
"""

KOTOMI_MIGRATIONS: tuple[str, ...] = (
    "ALTER TABLE users ADD COLUMN reputation_score INTEGER DEFAULT 0",
)
"""Kotomi's ad-hoc migrations; a "duplicate column" error means already applied."""

KOTOMI_PRAGMAS: tuple[tuple[str, str], ...] = (
    ("journal_mode", "WAL"),
    ("busy_timeout", "5000"),
    ("foreign_keys", "ON"),
    ("synchronous", "NORMAL"),
    ("cache_size", "-64000"),
    ("temp_store", "MEMORY"),
    ("mmap_size", "268435456"),
)
"""The pragmas Kotomi opens its database with, in order."""

KOTOMI_READ_QUERIES: dict[str, str] = {
    # A page's approved comments, oldest first, with one row per (comment, reaction kind).
    # Joining through pages lets the (site_id, page_id) index serve the lookup, and
    # ``r.page_id IS NULL`` lets the UNIQUE(page_id, comment_id, ...) index find a
    # comment's reactions (Kotomi declares no other index on reactions).
    "approved_comments_with_reactions": """
SELECT c.id AS comment_id,
       c.parent_id,
       c.author,
       c.text,
       c.created_at,
       ar.name AS reaction,
       ar.emoji,
       COUNT(r.id) AS reaction_count
FROM pages AS p
JOIN comments AS c
       ON c.site_id = p.site_id AND c.page_id = p.id
LEFT JOIN reactions AS r
       ON r.page_id IS NULL AND r.comment_id = c.id
LEFT JOIN allowed_reactions AS ar
       ON ar.id = r.allowed_reaction_id
WHERE p.id = :page_id
  AND +c.status = 'approved'
GROUP BY c.id, ar.id
ORDER BY c.created_at, c.id, ar.name
""",
    # Reaction counts of a site, per allowed reaction and target kind (page or comment).
    "reaction_counts_by_site": """
SELECT ar.name AS reaction,
       ar.emoji,
       CASE WHEN r.page_id IS NOT NULL THEN 'page' ELSE 'comment' END AS target,
       COUNT(*) AS reaction_count
FROM allowed_reactions AS ar
JOIN reactions AS r ON r.allowed_reaction_id = ar.id
WHERE ar.site_id = :site_id
GROUP BY ar.id, target
ORDER BY reaction_count DESC, ar.name, target
""",
    # The moderation queue of a site: pending comments, oldest first, with their page.
    "pending_moderation_queue": """
SELECT c.id AS comment_id,
       c.page_id,
       p.path AS page_path,
       c.author,
       c.author_email,
       c.text,
       c.created_at
FROM comments AS c
LEFT JOIN pages AS p ON p.id = c.page_id
WHERE c.site_id = :site_id
  AND c.status = 'pending'
ORDER BY c.created_at, c.id
LIMIT 200
""",
}
"""Read queries the service runs, for a restore drill; parameters ``:page_id`` / ``:site_id``."""


def read_query_params(conn: sqlite3.Connection) -> dict[str, str] | None:
    """Pick ``page_id`` and ``site_id`` values for :data:`KOTOMI_READ_QUERIES`.

    Chooses a page with approved comments (so every query returns rows on a populated database)
    and its site; falls back to any page.  Returns ``None`` when there are no pages.
    """
    row = conn.execute(
        "SELECT site_id, page_id FROM comments WHERE status = 'approved' ORDER BY rowid LIMIT 1"
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT site_id, id FROM pages ORDER BY rowid LIMIT 1").fetchone()
    if row is None:
        return None
    return {"site_id": str(row[0]), "page_id": str(row[1])}


def apply_kotomi_schema(conn: sqlite3.Connection) -> None:
    """Create the schema and run the ad-hoc migrations, as Kotomi does at every start."""
    conn.executescript(SCHEMA_SQL)
    for statement in KOTOMI_MIGRATIONS:
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc).lower():
                raise


def connect_like_kotomi(
    path: str | PathLike[str], *, check_same_thread: bool = False
) -> sqlite3.Connection:
    """Open ``path`` the way Kotomi does, in autocommit mode, and create the schema.

    Kotomi's Go pool hands connections to any goroutine, so by default the connection may be
    used from another thread (one thread at a time).
    """
    conn = sqlite3.connect(
        path, timeout=5.0, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        for name, value in KOTOMI_PRAGMAS:
            conn.execute(f"PRAGMA {name}={value}").fetchall()
        apply_kotomi_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------------------------
# Values shaped like Kotomi's.


def random_uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (deterministic for a seeded ``rng``)."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_default_timestamp(epoch_seconds: int) -> str:
    """``YYYY-MM-DD HH:MM:SS`` (UTC), as SQLite's ``CURRENT_TIMESTAMP`` default writes it."""
    d = datetime.fromtimestamp(epoch_seconds, UTC)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def format_go_timestamp(epoch_seconds: int, nanos: int = 0, offset_minutes: int = 0) -> str:
    """``2006-01-02 15:04:05.999999999-07:00``, as the Go SQLite driver writes a ``time.Time``.

    Trailing zeros of the fraction are dropped, and the fraction vanishes when it is zero.
    """
    d = datetime.fromtimestamp(epoch_seconds + offset_minutes * 60, UTC)
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    sign = "-" if offset_minutes < 0 else "+"
    off = abs(offset_minutes)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}{frac}{sign}{off // 60:02d}:{off % 60:02d}"
    )


_WORDS_TEXT = (
    "the a this that great post article thanks really nice agree disagree interesting "
    "point think about static site comments reactions kotomi hugo jekyll deploy docker "
    "sqlite backup question answer why how when where maybe never always works broken "
    "fixed update version release feature bug issue idea love useful clear wrong right "
    "example code snippet link read more later again first second last time today week "
    "learned something new helpful please could would should explain detail performance "
    "privacy self hosted simple small fast"
)
_WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = rng.choices(_WORDS, k=rng.randint(low, high))
    return " ".join(words).capitalize() + rng.choice((".", ".", "!", "?"))


_NAMES: tuple[str, ...] = (
    "Ana",
    "Bruno",
    "Chen",
    "Dana",
    "Emeka",
    "Fatima",
    "Goro",
    "Hana",
    "Ivan",
    "Jun",
    "Kira",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class KotomiWriter:
    """Simulates the writes of a running Kotomi on one connection.

    ``post_comment()`` and ``toggle_reaction()`` issue Kotomi's statements one by one, each
    committing alone (autocommit), exactly like the service.  ``request()`` runs one whole
    request (a comment post or a reaction toggle) inside one short ``BEGIN IMMEDIATE ... COMMIT``
    and returns only after the commit succeeded, retrying on ``SQLITE_BUSY``; it returns the id
    of the comment it committed, or ``None`` for a reaction toggle.

    The connection should come from :func:`connect_like_kotomi` (autocommit, schema present).
    Not thread-safe: use one writer from one thread at a time.
    """

    SITES_PER_WRITER = 2
    PATHS_PER_SITE = 40
    USERS_PER_SITE = 200
    RECENT_COMMENTS = 500

    def __init__(
        self,
        conn: sqlite3.Connection,
        rng: random.Random | None = None,
        *,
        comment_share: float = 0.7,
        max_busy_retries: int = 1000,
    ) -> None:
        self.conn = conn
        self.rng = rng if rng is not None else random.Random()
        self.comment_share = comment_share
        self.max_busy_retries = max_busy_retries
        rng_ = self.rng
        self._admin_id = random_uuid4(rng_)
        self._admin_email = f"owner-{self._admin_id[:8]}@example.org"
        self._site_ids: list[str] = [random_uuid4(rng_) for _ in range(self.SITES_PER_WRITER)]
        self._users: dict[str, list[tuple[str, str, str]]] = {
            site_id: [
                (
                    random_uuid4(rng_),
                    name := rng_.choice(_NAMES),
                    f"{name.lower()}.{rng_.randrange(10**6)}@example.com",
                )
                for _ in range(self.USERS_PER_SITE)
            ]
            for site_id in self._site_ids
        }
        self._sites_ready: set[str] = set()
        self._page_ids: dict[tuple[str, str], str] = {}
        self._reactions: dict[str, list[tuple[str, str]]] = {}
        self._recent: dict[str, deque[str]] = {}
        self._recent_comments: deque[tuple[str, str]] = deque(maxlen=self.RECENT_COMMENTS)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _now() -> tuple[str, str]:
        """(default-format timestamp, Go-format timestamp) for the current time."""
        ns = time.time_ns()
        seconds, nanos = divmod(ns, 1_000_000_000)
        return format_default_timestamp(seconds), format_go_timestamp(seconds, nanos)

    def _ensure_site(self, site_id: str) -> None:
        """Kotomi inserts the site on first use (with its owner and allowed reactions)."""
        if site_id in self._sites_ready:
            return
        _, go_now = self._now()
        c = self.conn
        c.execute(
            "INSERT OR IGNORE INTO admin_users (id, email, name, auth0_sub) VALUES (?, ?, ?, ?)",
            (self._admin_id, self._admin_email, "Site Owner", f"auth0|{self._admin_id[:24]}"),
        )
        c.execute(
            "INSERT OR IGNORE INTO sites (id, owner_id, name, domain, description, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                site_id,
                self._admin_id,
                f"Blog {site_id[:4]}",
                f"blog-{site_id[:8]}.example.org",
                "A static site",
                go_now,
                go_now,
            ),
        )
        for name, emoji, kind in (
            ("like", "👍", "both"),
            ("love", "❤️", "comment"),
            ("clap", "👏", "page"),
        ):
            c.execute(
                "INSERT OR IGNORE INTO allowed_reactions (id, site_id, name, emoji,"
                " reaction_type) VALUES (?, ?, ?, ?, ?)",
                (random_uuid4(self.rng), site_id, name, emoji, kind),
            )
        rows = c.execute(
            "SELECT id, reaction_type FROM allowed_reactions WHERE site_id = ? ORDER BY name",
            (site_id,),
        ).fetchall()
        self._reactions[site_id] = [(str(r[0]), str(r[1])) for r in rows]
        self._sites_ready.add(site_id)

    def _ensure_page(self, site_id: str, path: str) -> str:
        key = (site_id, path)
        page_id = self._page_ids.get(key)
        if page_id is not None:
            return page_id
        c = self.conn
        c.execute(
            "INSERT INTO pages (id, site_id, path, title) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (site_id, path) DO NOTHING",
            (random_uuid4(self.rng), site_id, path, path.strip("/").replace("-", " ").title()),
        )
        row = c.execute(
            "SELECT id FROM pages WHERE site_id = ? AND path = ?", (site_id, path)
        ).fetchone()
        assert row is not None
        page_id = str(row[0])
        self._page_ids[key] = page_id
        return page_id

    def _upsert_user(self, site_id: str, user: tuple[str, str, str]) -> None:
        """Every authenticated request upserts its users row."""
        user_id, name, email = user
        _, go_now = self._now()
        self.conn.execute(
            "INSERT INTO users (site_id, id, name, email, avatar_url, profile_url, is_verified,"
            " roles, first_seen, last_seen, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, 1, ?, ?, ?, ?, ?)"
            " ON CONFLICT (site_id, id) DO UPDATE SET name = excluded.name,"
            " email = excluded.email, avatar_url = excluded.avatar_url,"
            " last_seen = excluded.last_seen, updated_at = excluded.updated_at",
            (
                site_id,
                user_id,
                name,
                email,
                f"https://avatars.example.com/{user_id[:8]}.png",
                json.dumps(["user"]),
                go_now,
                go_now,
                go_now,
                go_now,
            ),
        )

    # -- Kotomi's requests ----------------------------------------------------------------------

    def post_comment(self) -> str:
        """Post one comment the way Kotomi does; each statement commits alone (outside
        ``request()``).  Returns the new comment's id."""
        rng = self.rng
        site_id = rng.choice(self._site_ids)
        user = rng.choice(self._users[site_id])
        self._upsert_user(site_id, user)
        self._ensure_site(site_id)
        path = f"/posts/{rng.randrange(self.PATHS_PER_SITE):03d}-post/"
        page_id = self._ensure_page(site_id, path)

        recent = self._recent.setdefault(page_id, deque(maxlen=20))
        parent_id = rng.choice(recent) if recent and rng.random() < 0.35 else None
        roll = rng.random()
        status = "pending" if roll < 0.6 else ("approved" if roll < 0.9 else "rejected")
        default_now, go_now = self._now()
        moderated_by = None if status == "pending" else self._admin_id
        moderated_at = None if status == "pending" else go_now
        comment_id = random_uuid4(rng)
        user_id, name, email = user
        text = " ".join(_sentence(rng, 4, 25) for _ in range(rng.randint(1, 4)))
        c = self.conn
        c.execute(
            "INSERT INTO comments (id, site_id, page_id, author, author_id, author_email, text,"
            " parent_id, status, moderated_by, moderated_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                comment_id,
                site_id,
                page_id,
                name,
                user_id,
                email,
                text,
                parent_id,
                status,
                moderated_by,
                moderated_at,
                go_now,
                go_now,
            ),
        )
        c.execute(
            "INSERT INTO notification_queue (id, site_id, type, recipient, subject, body, data,"
            " status, attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (
                random_uuid4(rng),
                site_id,
                "comment_reply" if parent_id else "new_comment",
                self._admin_email,
                f"New comment on {path}",
                f"{name} wrote: {text[:80]}",
                json.dumps({"comment_id": comment_id, "page_id": page_id}),
                default_now,
                default_now,
            ),
        )
        recent.append(comment_id)
        self._recent_comments.append((site_id, comment_id))
        return comment_id

    def toggle_reaction(self) -> None:
        """Toggle one page or comment reaction: select, then delete or insert; each statement
        commits alone (outside ``request()``)."""
        rng = self.rng
        on_comment = bool(self._recent_comments) and rng.random() < 0.6
        page_id: str | None = None
        comment_id: str | None = None
        if on_comment:
            site_id, comment_id = rng.choice(self._recent_comments)
        else:
            site_id = rng.choice(self._site_ids)
        user = rng.choice(self._users[site_id])
        self._upsert_user(site_id, user)
        self._ensure_site(site_id)
        if not on_comment:
            path = f"/posts/{rng.randrange(self.PATHS_PER_SITE):03d}-post/"
            page_id = self._ensure_page(site_id, path)
        wanted = ("comment", "both") if on_comment else ("page", "both")
        choices = [rid for rid, kind in self._reactions[site_id] if kind in wanted]
        allowed_id = rng.choice(choices)
        c = self.conn
        row = c.execute(
            "SELECT id FROM reactions WHERE page_id IS ? AND comment_id IS ?"
            " AND allowed_reaction_id = ? AND user_id = ?",
            (page_id, comment_id, allowed_id, user[0]),
        ).fetchone()
        if row is not None:
            c.execute("DELETE FROM reactions WHERE id = ?", (row[0],))
        else:
            _, go_now = self._now()
            c.execute(
                "INSERT INTO reactions (id, page_id, comment_id, allowed_reaction_id, user_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (random_uuid4(rng), page_id, comment_id, allowed_id, user[0], go_now),
            )

    def request(self) -> str | None:
        """One Kotomi-like request in one short ``BEGIN IMMEDIATE ... COMMIT``.

        Returns the id of the comment committed, or ``None`` if the request toggled a reaction.
        Returns only after ``COMMIT`` succeeded; on ``SQLITE_BUSY`` the transaction is rolled
        back and the whole request retried (up to ``max_busy_retries`` times).
        """
        is_comment = self.rng.random() < self.comment_share
        attempts = 0
        while True:
            attempts += 1
            # Caches filled inside a rolled-back transaction must not survive it.
            sites_ready = set(self._sites_ready)
            page_ids = dict(self._page_ids)
            comment_id: str | None = None
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    if is_comment:
                        comment_id = self.post_comment()
                    else:
                        self.toggle_reaction()
                    self._commit()
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            except BaseException as exc:
                self._sites_ready = sites_ready
                self._page_ids = page_ids
                if comment_id is not None:
                    self._forget(comment_id)
                if (
                    not isinstance(exc, sqlite3.OperationalError)
                    or not _is_busy(exc)
                    or attempts > self.max_busy_retries
                ):
                    raise
                time.sleep(min(0.001 * attempts, 0.05))
                continue
            return comment_id

    def _commit(self) -> None:
        for attempt in range(50):
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == 49:
                    raise
                time.sleep(0.002)

    def _forget(self, comment_id: str) -> None:
        for recent in self._recent.values():
            if comment_id in recent:
                recent.remove(comment_id)
        self._recent_comments = deque(
            (item for item in self._recent_comments if item[1] != comment_id),
            maxlen=self.RECENT_COMMENTS,
        )
