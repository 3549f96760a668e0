"""Outbound pacing shared by every process: at most one post per channel per interval.

Slack allows about one message per second per channel (bursts tolerated, then 429). Posts
from many runs to one channel each reserve the next free moment in Redis (one atomic script)
and wait for it, so they go out evenly instead of hitting 429s; a 429 that still comes is
retried by slack-sdk's retry handler, never dropped."""

from __future__ import annotations

import asyncio
import time

from redis import Redis

_RESERVE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
local gap = tonumber(ARGV[2])
local slot = math.max(now, last + gap)
redis.call('SET', KEYS[1], tostring(slot), 'PX', math.ceil((slot - now + gap) * 1000) + 1000)
return tostring(slot)
"""


def reserve(redis: Redis, key: str, interval: float) -> float:
    """Reserve the next moment (epoch seconds) this key may act; never earlier than now."""
    return float(redis.eval(_RESERVE, 1, f"teammates:pace:{key}", repr(time.time()), repr(interval)))  # type: ignore[arg-type]


async def pace(redis: Redis, key: str, interval: float) -> float:
    """Wait for this key's turn; returns the seconds waited."""
    if interval <= 0:
        return 0.0
    delay = max(0.0, reserve(redis, key, interval) - time.time())
    if delay:
        await asyncio.sleep(delay)
    return delay


def free_at(redis: Redis, key: str) -> float:
    """When (epoch seconds) this key's next slot is free, without reserving it: for work that
    would rather come back later than hold a worker while a burst of posts goes out."""
    last = redis.get(f"teammates:pace:{key}")
    return float(last) if last else 0.0
