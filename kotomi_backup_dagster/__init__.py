"""Verified, observable backups of Kotomi's SQLite database: a Dagster code location and a CLI."""

__version__ = "0.1.0"
