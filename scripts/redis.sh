#!/usr/bin/env bash
# Starts a local redis-server on 127.0.0.1:6379 unless one already answers.
set -euo pipefail
if redis-cli -p 6379 ping >/dev/null 2>&1; then exit 0; fi
redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --dir /tmp --logfile /tmp/teammates-redis.log >/dev/null
for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis-server did not start: see /tmp/teammates-redis.log" >&2; exit 1
