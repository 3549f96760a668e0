"""Turn jobs of recorded messages that are not in Redis yet: the second half of the hand-off.

Invariants a reader must not break:
- A message enters here only after its row is committed (so the platform has been, or may
  be, acked) and leaves only once its job is in Redis. While Redis is down or hung the jobs
  wait here and are tried again with a bounded backoff, so a message recorded during an
  outage is answered when Redis answers again, without any redelivery.
- Nothing here runs Redis on the event loop: every enqueue is one pipeline in a worker thread,
  so a hung Redis never holds up an ack.
- Memory is not the durable copy, the database is: what a process held here when it died is
  found again by `catch_up` when a web process starts and by the sweeper after a few minutes.
  Enqueueing a job twice is harmless (deterministic job ids, an idempotent turn).
"""

from __future__ import annotations

import asyncio
import logging

from redis import Redis
from rq.job import Job

from jobs import intake
from storage import inbound
from storage.db import Database

log = logging.getLogger(__name__)

BATCH = 500  # jobs per pipeline: one round trip, bounded in size after an outage
# How long a hand-off waits for others to share its pipeline: one job alone costs ~0.5 ms of
# CPU, twenty together ~0.15 ms each (measured here), CPU the next acks would wait for under
# load; a turn then starts at most this much later, against seconds of LLM time.
COALESCE = 0.01
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0  # once Redis is back, what waited is enqueued within about this long


class PendingTurns:
    """The web process's queue of (inbound id, attempt) whose turn job is still to be enqueued."""

    def __init__(self, redis: Redis, job_timeout: int) -> None:
        self.redis = redis
        self.job_timeout = job_timeout
        self._jobs: dict[tuple[int, int], None] = {}  # insertion-ordered set: oldest first
        self._wake = asyncio.Event()
        self._failing = False

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, inbound_id: int, attempt: int = 0) -> None:
        """Hand over a recorded message; returns at once, never touches Redis."""
        self._jobs[(inbound_id, attempt)] = None
        self._wake.set()

    async def run(self, db: Database | None = None) -> None:
        """Enqueue what is handed over, for as long as the process lives. With `db`, first
        find the messages a previous process recorded but never handed to Redis."""
        if db is not None:
            await self.catch_up(db)
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE)
            self._wake.clear()
            await self.drain()

    async def drain(self, *, give_up_after: float | None = None) -> bool:
        """Enqueue everything held, retrying while Redis fails; True when nothing is left.
        `give_up_after` (seconds) bounds the wait, for shutdown."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after is None else loop.time() + give_up_after
        backoff = 0.0
        while self._jobs:
            batch = list(self._jobs)[:BATCH]
            try:
                await asyncio.to_thread(intake.enqueue_turns, self.redis, batch, self.job_timeout)
            except Exception as exc:  # noqa: BLE001 - whatever Redis does, keep the jobs and retry
                if not self._failing:
                    self._failing = True
                    log.warning("cannot enqueue turn jobs (%s): %d message(s) wait for Redis", type(exc).__name__, len(self._jobs))
                backoff = min(max(backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
                if deadline is not None and loop.time() + backoff > deadline:
                    return False
                await asyncio.sleep(backoff)
                continue
            for key in batch:
                self._jobs.pop(key, None)
            backoff = 0.0
            if self._failing and not self._jobs:
                self._failing = False
                log.warning("Redis answers again: every waiting message is enqueued")
        return True

    async def catch_up(self, db: Database) -> int:
        """Take over messages recorded but never enqueued (their web process died between the
        ack and the enqueue): unclaimed rows with no turn job in Redis. Returns how many."""
        try:
            async with db.session() as session:
                ids = await inbound.awaiting_first_turn(session)
            missing = await asyncio.to_thread(_without_job, self.redis, ids)
        except Exception as exc:  # noqa: BLE001 - the sweeper covers these a few minutes later
            log.warning("catch-up of unqueued messages skipped (%s); the sweeper will enqueue them", type(exc).__name__)
            return 0
        for inbound_id in missing:
            self.add(inbound_id)
        if missing:
            log.warning("enqueueing %d message(s) recorded but never handed to Redis", len(missing))
        return len(missing)


def _without_job(redis: Redis, ids: list[int]) -> list[int]:
    """The ids whose first turn job Redis does not know (never enqueued, or Redis lost it)."""
    if not ids:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for inbound_id in ids:
            pipe.exists(Job.key_for(intake.turn_job_id(inbound_id)))
        found = pipe.execute()
    return [inbound_id for inbound_id, exists in zip(ids, found, strict=True) if not exists]
