#!/usr/bin/env bash
# Peak RSS of `kotomi-backup backup` against database size: memory must not grow with it.
# Usage: bench/memory.sh [sizes in MB...]   (default: 10 1000). Databases are cached in
# bench/.cache. Needs /usr/bin/time (Debian's `time` package).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CACHE=bench/.cache
mkdir -p "$CACHE"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 1000)
printf '| database | peak RSS quick | peak RSS encrypted | wall quick (s) |\n|---:|---:|---:|---:|\n'
key="$CACHE/age-key.txt"
[ -f "$key" ] || "$BIN/python" -c "import pyrage; print(pyrage.x25519.Identity.generate())" > "$key"
recipient=$("$BIN/python" -c "import pyrage,sys; print(pyrage.x25519.Identity.from_str(open(sys.argv[1]).read().strip()).to_public())" "$key")
for mb in "${sizes[@]}"; do
  db="$CACHE/kotomi-${mb}mb.db"
  [ -f "$db" ] || "$BIN/python" -c "
from kotomi_backup_dagster.demo import generate_demo_database
generate_demo_database('$db', size_bytes=$mb * 1_000_000, seed=1)"
  out=$(mktemp -d)
  measure() {
    /usr/bin/time -f '%M %e' -o "$out/time" "$@" >/dev/null
    cat "$out/time"
  }
  read -r rss_plain wall <<<"$(KOTOMI_BACKUP_STAGING_DIR=$out/staging measure "$BIN/kotomi-backup" backup --db "$db" --to "$out/plain")"
  read -r rss_age _ <<<"$(KOTOMI_BACKUP_STAGING_DIR=$out/staging KOTOMI_BACKUP_AGE_RECIPIENTS=$recipient measure "$BIN/kotomi-backup" backup --db "$db" --to "$out/age")"
  printf '| %s MB | %s MB | %s MB | %s |\n' "$mb" "$((rss_plain / 1024))" "$((rss_age / 1024))" "$wall"
  rm -rf "$out"
done
