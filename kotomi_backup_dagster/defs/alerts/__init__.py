"""Alerts and monitoring: run failures, stale backups, overdue or failed drills, size drops,
unlistable destinations, and the `backup_catalog` asset of every database
(`build_alerts_definitions` in definitions.py)."""

from .resources import AlertNotifier, alert_notifier_from_env

__all__ = ["AlertNotifier", "alert_notifier_from_env"]
