"""Who does what (docs/immutability.md): the *writer* on Kotomi's host puts new backups and
reads; the *keeper* on a trusted host prunes, locks, drills and tests; `both` is one host
doing everything (the default: nothing changes for a single-host setup).

The split holds because each role runs with credentials that allow only its own work; this
module only makes a command run on the wrong host fail at once with one line, instead of
half-way with the store's "access denied".
"""

from __future__ import annotations

from .. import config
from ..errors import ConfigError
from .guard import KeeperSettings

# The commands (and Dagster jobs) that belong to one role only.
KEEPER_WORK = {
    "prune": "removes backups",
    "drill": "writes drill records",
}
WRITER_WORK = {
    "backup": "takes backups of the live database",
}


def require_role(settings: KeeperSettings, command: str) -> None:
    """Refuse `command` on a host whose role does not include it (ConfigError, exit 2)."""
    if settings.role == "writer" and command in KEEPER_WORK:
        raise ConfigError(
            f"`{command}` {KEEPER_WORK[command]}: that is the keeper's work, and this host is "
            f"a writer ({config.ROLE.name}=writer, credentials that cannot delete); run it on "
            "the keeper (docs/immutability.md)"
        )
    if settings.role == "keeper" and command in WRITER_WORK:
        raise ConfigError(
            f"`{command}` {WRITER_WORK[command]}: that is the writer's work, and this host is "
            f"the keeper ({config.ROLE.name}=keeper); run it on Kotomi's host"
        )
