#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, then the tests on SQLite and on a real
# PostgreSQL. Installs what a fresh Debian machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --postgres
.venv/bin/ruff check .
.venv/bin/mypy
echo "== tests on SQLite"
.venv/bin/pytest -q -p no:cacheprovider "$@"
echo "== tests on PostgreSQL"
TEAMMATES_TEST_POSTGRES=$(bash scripts/postgres.sh) .venv/bin/pytest -q -p no:cacheprovider -m "not sqlite_only" "$@"
