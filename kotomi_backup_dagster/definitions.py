"""The code location: every area's definitions, for every configured database."""

from dagster import Definitions

from .defs.alerts import build_alerts_definitions
from .defs.backup.definitions import build_backup_definitions
from .defs.databases import databases_from_env
from .defs.restore.definitions import build_restore_definitions
from .defs.retention.definitions import build_retention_definitions

databases = databases_from_env()
defs = Definitions.merge(
    *(build_backup_definitions(db) for db in databases),
    build_restore_definitions(databases),
    build_retention_definitions(databases),
    build_alerts_definitions(databases),
)
