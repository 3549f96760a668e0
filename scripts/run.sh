#!/usr/bin/env bash
# Installs everything and starts the whole system on the embedded defaults (SQLite + local
# Redis) with the example config, unless ./teammates.yml already exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/redis.sh
[ -f teammates.yml ] || cp teammates.example.yml teammates.yml
exec .venv/bin/teammates run "$@"
