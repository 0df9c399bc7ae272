#!/usr/bin/env bash
# The restore step of Kotomi's backup guide: gunzip the backup, integrity check with `grep -q ok`.
# Usage: bench/guide-restore.sh BACKUP.db.gz TARGET_DB
set -euo pipefail
gunzip -c "$1" > "$2"
sqlite3 "$2" "PRAGMA integrity_check" | grep -q ok
