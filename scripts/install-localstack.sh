#!/usr/bin/env bash
# LocalStack's S3 for the tests (tests/servers.py: localstack_s3): its own virtualenv,
# .venv-localstack, since localstack-core 2026.3.0 needs Python 3.13 and the project runs on
# 3.11. Skips when the pinned version is there and imports. Without a Python 3.13 it says so in
# one line and stops (the LocalStack tests then skip with that reason), except on CI (CI=true),
# where it fails: CI's machine has Python 3.13 under pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LOCALSTACK_VENV:-.venv-localstack}
VERSION=2026.3.0
# base-runtime: the gateway (hypercorn, rolo) and the S3 provider; the full `runtime` extra
# adds every other service (awscli, a JVM bridge, OpenSearch...), which the tests never start.
# cbor2 and pyOpenSSL: the releases localstack-core 2026.3.0 works with.
PACKAGES=("localstack-core[base-runtime]==$VERSION" "cbor2<5.7" "pyOpenSSL==24.2.1")

installed_version() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata

import hypercorn  # noqa: F401  the gateway server the tests ask for
import localstack.services.s3.provider  # noqa: F401

print(importlib.metadata.version("localstack-core"))
EOF
}

if [ -x "$VENV/bin/python" ] && [ "$(installed_version)" = "$VERSION" ]; then
  exit 0
fi

find_python313() {
  local candidate
  for candidate in "${LOCALSTACK_PYTHON:-}" python3.13 \
    "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 \
    /root/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do
    [ -n "$candidate" ] || continue
    # pyenv's shim exists even when 3.13 is not the selected version: ask it to run.
    if "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if ! python=$(find_python313); then
  missing="install-localstack: no Python 3.13 found (LocalStack's S3 needs it; set LOCALSTACK_PYTHON to one)"
  if [ "${CI:-}" = "true" ]; then
    echo "$missing: CI's machine must have it"
    exit 1
  fi
  echo "$missing: the LocalStack tests will skip"
  exit 0
fi

echo "installing LocalStack $VERSION into $VENV (Python $("$python" -c 'import platform; print(platform.python_version())'))"
rm -rf "$VENV"
"$python" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/pip" install -q "${PACKAGES[@]}" 2>&1 | grep -v '^WARNING: Location' || true
if [ "$(installed_version)" != "$VERSION" ]; then
  echo "install-localstack: LocalStack $VERSION did not install into $VENV (see pip's output above)"
  exit 1
fi
