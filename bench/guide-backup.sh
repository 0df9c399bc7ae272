#!/usr/bin/env bash
# The backup step of Kotomi's backup guide (0.1.0-beta.1), as a cron job would run it:
# online copy with the sqlite3 shell, integrity check with `grep -q ok`, gzip -6.
# Usage: bench/guide-backup.sh DB OUT_DIR     (writes OUT_DIR/kotomi-<stamp>.db.gz)
set -euo pipefail
db=$1 out=$2
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
copy="$out/kotomi-$stamp.db"
sqlite3 "$db" ".backup '$copy'"
sqlite3 "$copy" "PRAGMA integrity_check" | grep -q ok
gzip -6 "$copy"
