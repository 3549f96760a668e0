#!/usr/bin/env bash
# Installs what teammates needs on a Debian machine: Redis (and PostgreSQL with --postgres),
# a virtualenv in .venv with the package and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

want_pg=0
[ "${1:-}" = "--postgres" ] && want_pg=1

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
if [ "$want_pg" = 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then packages+=(postgresql); fi
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "installing: ${packages[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import teammates.cli" # fails loudly if the install did not work
