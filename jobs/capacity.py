"""How busy the system is: queue depth and age, busy and idle workers, turn latency.

Read from Redis, which every process shares, so one web process can report the capacity of
all workers on all machines (for `/metrics` and `teammates status`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from rq import Worker
from rq.job import Job

from jobs import queues

TURN_LATENCY_KEY = "teammates:turn_latency"
TURN_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0, 120.0)


@dataclass(frozen=True)
class QueueLoad:
    name: str
    depth: int
    oldest_age: float  # seconds the oldest waiting job has waited; 0 when empty


@dataclass(frozen=True)
class Capacity:
    queues: list[QueueLoad]
    busy_workers: int
    idle_workers: int
    turn_latency_buckets: list[tuple[float, int]]  # cumulative counts per upper bound (+inf last)
    turn_latency_sum: float


def snapshot(redis: Redis) -> Capacity:
    loads = []
    for name in queues.ALL:
        queue = queues.queue(redis, name)
        depth = queue.count
        age = 0.0
        if depth:
            first = queue.get_job_ids(0, 0)
            job = Job.fetch(first[0], connection=redis) if first else None
            if job is not None and job.enqueued_at is not None:
                enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
                age = max(0.0, (datetime.now(UTC) - enqueued).total_seconds())
        loads.append(QueueLoad(name, depth, age))
    states = [worker.get_state() for worker in Worker.all(connection=redis)]
    busy = sum(1 for state in states if state == "busy")
    raw = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in redis.hgetall(TURN_LATENCY_KEY).items()}
    buckets, running = [], 0
    for bound in (*TURN_LATENCY_BUCKETS, float("inf")):
        running += int(raw.get(_bucket(bound), 0))
        buckets.append((bound, running))
    return Capacity(loads, busy, len(states) - busy, buckets, raw.get("sum", 0.0))


def observe_turn(redis: Redis, seconds: float) -> None:
    """Count one answered turn (received → reply posted) in the shared histogram."""
    bound = next((b for b in TURN_LATENCY_BUCKETS if seconds <= b), float("inf"))
    with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(TURN_LATENCY_KEY, _bucket(bound), 1)
        pipe.hincrbyfloat(TURN_LATENCY_KEY, "sum", seconds)
        pipe.execute()


def percentile(buckets: list[tuple[float, int]], fraction: float) -> float | None:
    """Upper bound of the bucket holding that fraction of turns (None without turns)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for bound, count in buckets:
        if count >= fraction * total:
            return bound
    return None


def _bucket(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"
