"""Kotomi's SQLite database, as the backup engine needs to know it (Kotomi 0.1.0-beta.1).

Only what a backup uses: the 14 tables a Kotomi file must hold (verification refuses a file
without them) and the read queries the service runs, which a restore drill runs against a
restored copy. Kotomi's schema, the demo data and a simulated live Kotomi are in
:mod:`kotomi_backup_dagster.demo`, outside the engine.

Plain Python and the standard library only: no Dagster import.
"""

from __future__ import annotations

import sqlite3

__all__ = ["KOTOMI_READ_QUERIES", "KOTOMI_TABLES", "read_query_params"]

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
