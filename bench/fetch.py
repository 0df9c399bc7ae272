"""Restore with checksum verification only: download, check both sha256s, decrypt, decompress.

The part of `kotomi-backup restore` that restic's `restore` also does (restic checks each blob's
hash, not the database); `kotomi-backup restore` adds a full integrity check and row counts.
Usage: python bench/fetch.py URL NAME TARGET [AGE_IDENTITY_FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

from kotomi_backup_dagster.engine.archive import load_identities
from kotomi_backup_dagster.engine.restore import choose_backup, fetch_backup
from kotomi_backup_dagster.engine.stores import open_store


def main(argv: list[str]) -> int:
    url, name, target = argv[:3]
    identities = load_identities(Path(argv[3])) if len(argv) > 3 else []
    chosen = choose_backup([open_store(url)], name, "latest")
    fetch_backup(chosen, Path(target), identities=identities)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
