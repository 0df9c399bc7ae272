#!/usr/bin/env bash
# Install what the deployment test needs, when missing: Debian's Docker engine (docker.io) and
# docker-compose 1.29 (Debian 12 has no compose v2 plugin), and debootstrap, which builds the
# base images locally where no image registry is reachable. Idempotent.
set -euo pipefail
declare -A package_of=(
  [/usr/bin/docker]=docker.io [/usr/sbin/dockerd]=docker.io
  [/usr/bin/docker-compose]=docker-compose [/usr/sbin/debootstrap]=debootstrap
)
need=()
for path in "${!package_of[@]}"; do
  [ -x "$path" ] || need+=("${package_of[$path]}")
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
# --no-install-recommends: docker.io recommends cgroupfs-mount, git, xz-utils and friends,
# none of which the engine needs here. The package's own service is not started (no systemd
# here; the test starts its own dockerd).
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${need[@]}" >/dev/null
