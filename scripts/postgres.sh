#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster (as the postgres user, never root) and makes sure the
# role the tests use exists. Prints the admin URL the test suite takes in TEAMMATES_TEST_POSTGRES.
set -euo pipefail
# Only the URL goes to stdout: pg_ctlcluster chatter ("Removed stale pid file.") goes to stderr.
exec 3>&1 1>&2
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start 3>&-
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 50); do su postgres -c "psql -p $port -qtAc 'select 1'" >/dev/null 2>&1 && break; sleep 0.2; done
su postgres -c "psql -p $port -qtAc \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='teammates') THEN CREATE ROLE teammates LOGIN CREATEDB PASSWORD 'teammates'; END IF; END\\\$\\\$\"" >/dev/null
echo "postgresql://teammates:teammates@127.0.0.1:$port/postgres" >&3
