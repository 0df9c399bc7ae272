"""The two kinds of failure the CLI and the Dagster layer tell apart.

Every message is one line that says what is wrong and what to do, and never holds a secret.
"""


class BackupError(Exception):
    """The operation failed (verification, checksum, upload...): CLI exit 1."""


class ConfigError(BackupError):
    """Bad usage or configuration (missing file, bad URL, bad key): CLI exit 2."""
