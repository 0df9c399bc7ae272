#!/usr/bin/env bash
# Start Debian's PostgreSQL for the end-to-end test (Dagster's run storage) and make its role.
# Idempotent. Role and password match deploy/dagster.yaml's defaults in docker-compose.yml.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
version=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $2}')
if [ -z "$version" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  cluster=main
  $sudo pg_createcluster "$version" "$cluster" >/dev/null
fi
if ! pg_lsclusters -h | awk -v c="$cluster" '$2==c {print $4}' | grep -q online; then
  $sudo pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
as_postgres psql -q -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dagster') THEN
    CREATE ROLE dagster LOGIN PASSWORD 'dagster' CREATEDB;
  END IF; END \$\$;"
echo "PostgreSQL $version/$cluster is up on 127.0.0.1:5432 (role dagster)"
