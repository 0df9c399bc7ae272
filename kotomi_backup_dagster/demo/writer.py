"""A simulated Kotomi: the writes a running service makes, on one connection.

Used to put a live load on a database while it is backed up (tests, benchmarks, the
deployment test's stand-in for Kotomi); the product never writes to a Kotomi database.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import deque

from .rows import Comment, comment_notification
from .schema import insert_sql
from .values import format_default_timestamp, format_go_timestamp, random_uuid4
from .words import ESSENTIAL_REACTIONS, REACTIONS, paragraph, person

__all__ = ["KotomiWriter"]


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
            site_id: [(random_uuid4(rng_), *person(rng_)) for _ in range(self.USERS_PER_SITE)]
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
        for name, emoji, kind in REACTIONS:
            if name not in ESSENTIAL_REACTIONS:
                continue
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
        moderated = None if status == "pending" else (self._admin_id, go_now)
        text = paragraph(rng, 1, 4)
        comment = Comment.posted(
            random_uuid4(rng), site_id, page_id, user, text, parent_id, status, moderated, go_now
        )
        c = self.conn
        c.execute(insert_sql("comments"), comment)
        notice = comment_notification(
            random_uuid4(rng),
            comment,
            recipient=self._admin_email,
            where=path,
            status="pending",
            attempts=0,
            error=None,
            created_at=default_now,
            sent_at=None,
            updated_at=default_now,
        )
        c.execute(insert_sql("notification_queue"), notice)
        comment_id = comment.id
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
