"""Queues by kind of work: a person waiting for an answer never waits behind bulk work.

Workers listen to `turns` first, then `workflows`, then `bulk` (RQ takes queues in order)."""

from __future__ import annotations

from redis import Redis
from rq import Queue

TURNS = "turns"
WORKFLOWS = "workflows"
BULK = "bulk"
ALL = (TURNS, WORKFLOWS, BULK)


def queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis)


def redis_from_url(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30)
