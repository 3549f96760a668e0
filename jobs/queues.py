"""Queues by kind of work: a person waiting for an answer never waits behind bulk work.

Workers listen to `turns` first, then `workflows`, then `bulk` (RQ takes queues in order)."""

from __future__ import annotations

from redis import ConnectionError as RedisConnectionError
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

TURNS = "turns"
WORKFLOWS = "workflows"
BULK = "bulk"
ALL = (TURNS, WORKFLOWS, BULK)


def queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis)


def redis_from_url(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30)


# The web process's calls to Redis fail within this (seconds) instead of holding up the event
# loop that acks Slack: its reconciler still calls Redis on that loop.
WEB_REDIS_TIMEOUT = 0.25


def redis_for_web(url: str) -> Redis:
    """A client that gives up fast: one attempt of at most `WEB_REDIS_TIMEOUT` to connect and
    to read, and one immediate retry only on a refused or reset connection (a pooled connection
    that Redis dropped when it restarted). redis-py's default would retry 10 times with backoff:
    seconds of a stalled loop while Redis is down, minutes while it hangs."""
    return Redis.from_url(
        url,
        socket_connect_timeout=WEB_REDIS_TIMEOUT,
        socket_timeout=WEB_REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
