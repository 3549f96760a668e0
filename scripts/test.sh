#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, then the tests on SQLite and on a real
# PostgreSQL. Installs what a fresh Debian machine lacks first.
#
# The two databases' runs go side by side: the tests mostly wait on real processes and
# sockets (about one core in use per run), so on two cores this halves the wall time. Each run
# has its own redis-server, temporary folders and databases; their output is shown one after
# the other, and the suite fails if either run does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --postgres
.venv/bin/ruff check .
.venv/bin/mypy
postgres=$(bash scripts/postgres.sh)
logs=$(mktemp -d)
.venv/bin/pytest -q -p no:cacheprovider "$@" >"$logs/sqlite.log" 2>&1 &
sqlite_run=$!
TEAMMATES_TEST_POSTGRES=$postgres .venv/bin/pytest -q -p no:cacheprovider -m "not sqlite_only" "$@" >"$logs/postgres.log" 2>&1 &
postgres_run=$!
status=0
wait "$sqlite_run" || status=1
wait "$postgres_run" || status=1
echo "== tests on SQLite"
cat "$logs/sqlite.log"
echo "== tests on PostgreSQL"
cat "$logs/postgres.log"
rm -rf "$logs"
exit "$status"
