#!/usr/bin/env bash
# Build the base images from Debian's packages, for a machine that reaches a Debian mirror but
# no image registry (this project's CI): debootstrap a minimal bookworm, import it, then
#   kotomi-local/python:3.11-bookworm    Debian's Python 3.11, for the Dockerfile's PYTHON_IMAGE
#   kotomi-local/postgres:15-bookworm    Debian's PostgreSQL 15, for DAGSTER_POSTGRES_IMAGE
#                                        (Debian 12 has no 16; it starts like the postgres image)
# The engine is the one DOCKER_HOST names; builds use the host's network (the engine may have no
# bridge). apt checks the packages' signatures, so a plain-http mirror is fine.
# KOTOMI_BASE_CACHE=DIR keeps the debootstrap tarball there between runs (default: no cache).
# Idempotent: an image that exists is not built again.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
docker=/usr/bin/docker   # Debian's client, whatever newer one comes first on PATH
context="$here/deploy/local-base"

exists() { $docker image inspect "$1" >/dev/null 2>&1; }

# The mirror apt already uses on this machine (deb822 or one-line sources), else Debian's CDN.
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } \
    | grep -E '/debian/?$' | head -1
) || true
mirror=${mirror:-http://deb.debian.org/debian}

if ! exists kotomi-local/debian:bookworm; then
  tarball=""
  if [ -n "${KOTOMI_BASE_CACHE:-}" ]; then
    mkdir -p "$KOTOMI_BASE_CACHE"
    tarball="$KOTOMI_BASE_CACHE/debian-bookworm-minbase.tar"
  fi
  work=$(mktemp -d /var/tmp/debootstrap.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  if [ -z "$tarball" ] || [ ! -s "$tarball" ]; then
    echo "debootstrap --variant=minbase bookworm from $mirror"
    started=$SECONDS
    debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log"; exit 1; }
    # Nothing of the build machine's apt state belongs in an image.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    out=${tarball:-$work/root.tar}
    tar -C "$work/root" --numeric-owner -cf "$out.part" . && mv "$out.part" "$out"
    rm -rf "$work/root"
    tarball=$out
    echo "took debootstrap $((SECONDS - started)) s"
  fi
  $docker import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" kotomi-local/debian:bookworm >/dev/null
fi

build() {  # tag, Dockerfile
  exists "$1" && return 0
  echo "building $1"
  local started=$SECONDS
  $docker build -q --network host -t "$1" -f "$context/$2" "$context" >/dev/null
  echo "took $1 $((SECONDS - started)) s"
}
build kotomi-local/python:3.11-bookworm python.Dockerfile
build kotomi-local/postgres:15-bookworm postgres.Dockerfile
