"""Which databases get a pipeline: decided at load time, since asset keys carry the name.

One database by default (`KOTOMI_BACKUP_NAME`, path from `KOTOMI_DB_PATH`). Several with
`KOTOMI_BACKUP_DATABASES="blog=/data/blog.db,docs=/data/docs.db"`; every other setting
(destinations, keys, retention) is shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine import config

DATABASE_TAG = "kotomi_backup/database"
DATABASES_TAG = "kotomi_backup/databases"  # a run over several: their names, for people
POOL_PREFIX = "kotomi_backup_"  # + the database's name: its Dagster pool


@dataclass(frozen=True)
class DatabaseSpec:
    name: str
    db_path: str | None = None  # None: read KOTOMI_DB_PATH at run time (EnvVar)

    @property
    def key(self) -> str:
        """The name as a Dagster identifier (resource keys, job names)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    @property
    def tags(self) -> dict[str, str]:
        """Every run about this database carries it; the run queue allows one at a time."""
        return {DATABASE_TAG: self.name}

    @property
    def pool(self) -> str:
        """Every step about this database is in this Dagster pool; with the instance's
        `pools: granularity: run` and a limit of 1, one run holds it at a time, whoever
        launched the run (UI, schedule, sensor, re-execution)."""
        return f"{POOL_PREFIX}{self.name}"


def databases_from_env(environ: Mapping[str, str] | None = None) -> list[DatabaseSpec]:
    """KOTOMI_BACKUP_DATABASES, else the one database KOTOMI_BACKUP_NAME names (its path:
    KOTOMI_DB_PATH, read at run time)."""
    listed = config.DATABASES.read(environ)
    if not listed:
        return [DatabaseSpec(name=config.NAME.read(environ))]
    specs = [DatabaseSpec(name=name, db_path=path) for name, path in listed]
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        text = config.DATABASES.text(environ)
        raise config.DATABASES.refuse(text, "give each database a name of its own")
    return specs


# The last part of every asset key of a database's pipeline; the first part is its name.
STAGES = frozenset(
    {"snapshot", "archive", "upload", "prune", "restore_drill", "restore_test", "backup_catalog"}
)
RESTORE_JOB = "restore_job"
RESTORE_OP = "choose_backup_to_restore"


def databases_of_run(
    tags: Mapping[str, str],
    job_name: str,
    asset_keys: Iterable[Sequence[str]],
    run_config: Mapping[str, Any] | None = None,
    pools: Iterable[str] = (),
) -> set[str]:
    """The databases a run works on: its tag, else the names its asset keys start with, else
    its steps' pools (a whole job launched), else (a restore) the database of its config."""
    if tags.get(DATABASE_TAG):
        return {tags[DATABASE_TAG]}
    names = {path[0] for path in asset_keys if len(path) == 2 and path[1] in STAGES}
    if names:
        return names
    names = {p[len(POOL_PREFIX) :] for p in pools if p.startswith(POOL_PREFIX)}
    if names:
        return names
    if job_name == RESTORE_JOB:
        config = ((run_config or {}).get("ops") or {}).get(RESTORE_OP) or {}
        database = (config.get("config") or {}).get("database")
        if isinstance(database, str) and database:
            return {database}
    return set()
