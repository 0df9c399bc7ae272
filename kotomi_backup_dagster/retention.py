"""Public retention API (restic ``forget`` semantics); see ``engine/retention.py``."""

from .engine.retention import (
    BackupRef,
    CalendarDuration,
    RetentionDecision,
    RetentionPolicy,
    plan_backups,
    plan_retention,
)

__all__ = [
    "BackupRef",
    "CalendarDuration",
    "RetentionDecision",
    "RetentionPolicy",
    "plan_backups",
    "plan_retention",
]
