"""Restore every backup and print its comments in commit order, for the deployment test.

Usage: python backup_rows.py BACKUP_URL  (run in a container of the project's image)

Lists the backups with `kotomi-backup list --json`, restores each with `kotomi-backup restore`
into a scratch folder, and prints one JSON object: {backup_id: [comment id, ...]}, the
comments in rowid order (Kotomi never deletes one, so that is the order of their commits).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    url = sys.argv[1]
    listing = json.loads(
        subprocess.run(
            ["kotomi-backup", "list", "--to", url, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    [destination] = listing["destinations"]
    rows: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for backup in destination["backups"]:
            backup_id = backup["backup_id"]
            db = Path(scratch) / f"{backup_id}.db"
            subprocess.run(
                ["kotomi-backup", "restore", backup_id, "--db", str(db), "--from", url],
                check=True,
                capture_output=True,
            )
            conn = sqlite3.connect(db)
            try:
                rows[backup_id] = [
                    r[0] for r in conn.execute("SELECT id FROM comments ORDER BY rowid")
                ]
            finally:
                conn.close()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
