"""Kotomi's schema and the way Kotomi opens its file, for demo databases and simulated load.

Written from the facts of Kotomi 0.1.0-beta.1: the 14 tables with their constraints and indexes,
the one ad-hoc migration, and the pragmas of its connection pool. The product itself never
creates or opens a Kotomi database this way (it backs up whatever file it is given); only the
demo, the tests and the benchmarks do.
"""

from __future__ import annotations

import functools
import sqlite3
from os import PathLike

from ..engine.kotomi import KOTOMI_TABLES

__all__ = [
    "KOTOMI_MIGRATIONS",
    "KOTOMI_PRAGMAS",
    "SCHEMA_SQL",
    "apply_kotomi_schema",
    "columns",
    "connect_like_kotomi",
    "insert_sql",
]

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


@functools.cache
def _columns_by_table() -> dict[str, tuple[str, ...]]:
    # Read back from SQLite itself, so the column lists can never drift from the DDL.
    conn = sqlite3.connect(":memory:")
    try:
        apply_kotomi_schema(conn)
        return {
            table: tuple(str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})"))
            for table in KOTOMI_TABLES
        }
    finally:
        conn.close()


def columns(table: str) -> tuple[str, ...]:
    """Every column of ``table``, in the order of the file (migrated columns last)."""
    return _columns_by_table()[table]


def insert_sql(table: str) -> str:
    """``INSERT INTO table (every column) VALUES (?, ...)``: rows are tuples in column order."""
    names = columns(table)
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
