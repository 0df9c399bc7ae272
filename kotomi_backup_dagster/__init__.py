"""Verified, observable backups of Kotomi's SQLite database: a Dagster code location and a CLI.

The Dagster entry points load lazily, so the CLI and the engine never import Dagster:
`build_kotomi_backup_defs` (a Definitions factory) and `KotomiBackupComponent` (dg).
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_kotomi_backup_defs": "kotomi_backup_dagster.defs.factory",
    "KotomiBackupComponent": "kotomi_backup_dagster.component",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kotomi_backup_dagster' has no attribute {name!r}")
