#!/usr/bin/env bash
# Install the Debian packages the tests use, when missing: zstd, age, sqlite3 (archives are
# checked with the standard tools), restic (the retention oracle), PostgreSQL (Dagster's
# storage in the end-to-end test), Chromium + chromedriver (screenshots of the real UI),
# time (/usr/bin/time).
set -euo pipefail
declare -A package_of=(
  [zstd]=zstd [age]=age [sqlite3]=sqlite3 [restic]=restic
  [pg_ctlcluster]=postgresql [chromium]=chromium [chromedriver]=chromium-driver
  [/usr/bin/time]=time
)
need=()
for cmd in "${!package_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("${package_of[$cmd]}")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
