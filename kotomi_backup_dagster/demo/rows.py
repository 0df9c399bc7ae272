"""The rows a new comment makes, shared by the demo generator and the simulated writer.

Both post comments the way Kotomi does: the comment itself, then a notification to the site's
owner. Rows are tuples in the table's column order (see :func:`.schema.insert_sql`).
"""

from __future__ import annotations

import json
from typing import NamedTuple

__all__ = ["Comment", "Row", "comment_notification"]

Row = tuple[object, ...]


class Comment(NamedTuple):
    """A ``comments`` row; the fields are the table's columns, in order."""

    id: str
    site_id: str
    page_id: str
    author: str
    author_id: str
    author_email: str | None
    text: str
    parent_id: str | None
    status: str
    moderated_by: str | None
    moderated_at: str | None
    created_at: str
    updated_at: str

    @classmethod
    def posted(
        cls,
        comment_id: str,
        site_id: str,
        page_id: str,
        user: tuple[str, str, str | None],
        text: str,
        parent_id: str | None,
        status: str,
        moderated: tuple[str, str] | None,
        created_at: str,
    ) -> Comment:
        """A comment by ``user`` (id, name, e-mail); ``moderated`` is (by whom, when) unless
        it is pending, and the moderation is its last update."""
        user_id, name, email = user
        by, at = moderated if moderated is not None else (None, None)
        return cls(
            comment_id,
            site_id,
            page_id,
            name,
            user_id,
            email,
            text,
            parent_id,
            status,
            by,
            at,
            created_at,
            at or created_at,
        )


def comment_notification(
    notification_id: str,
    comment: Comment,
    *,
    recipient: str,
    where: str,
    status: str,
    attempts: int,
    error: str | None,
    created_at: str,
    sent_at: str | None,
    updated_at: str,
) -> Row:
    """The ``notification_queue`` row telling ``recipient`` of ``comment`` (on ``where``)."""
    return (
        notification_id,
        comment.site_id,
        "comment_reply" if comment.parent_id else "new_comment",
        recipient,
        f"New comment on {where}",
        f"{comment.author} wrote: {comment.text[:120]}",
        json.dumps({"comment_id": comment.id, "page_id": comment.page_id}),
        status,
        attempts,
        error,
        created_at,
        sent_at,
        updated_at,
    )
