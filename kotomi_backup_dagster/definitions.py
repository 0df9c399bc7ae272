"""The code location: every area's definitions, for every configured database."""

from dagster import Definitions

from .defs.backup.definitions import build_backup_definitions
from .defs.databases import databases_from_env

defs = Definitions.merge(*(build_backup_definitions(db) for db in databases_from_env()))
