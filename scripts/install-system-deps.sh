#!/usr/bin/env bash
# Install the Debian packages the tests use, when missing: zstd, age, sqlite3, restic.
set -euo pipefail
need=()
for cmd in zstd age sqlite3 restic; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
