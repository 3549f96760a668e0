"""Structured log lines: every line carries the run, member and workflow ids it concerns."""

from __future__ import annotations

import logging
import sys

_FIELDS = ("run_id", "member", "workflow", "event_id")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{name}={getattr(record, name)}" for name in _FIELDS if getattr(record, name, None))
        return f"{line} {extras}" if extras else line


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "slack_bolt", "slack_sdk", "aiohttp.access", "rq.worker", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
