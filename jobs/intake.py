"""The durable hand-off: record an inbound message, ack the platform, then enqueue the job
that answers it.

Called by the adapters before they ack the platform. The committed row is the hand-off: once
`accept` returns an id, the message will be answered, so the caller acks. The turn job is
enqueued after that, by `jobs.pending.PendingTurns` (which keeps trying while Redis is down or
hung), and the sweeper re-enqueues whatever a process that died in between never handed over.
So neither a Redis outage nor a slow Redis ever delays or fails an ack. A redelivery (same
event id) or the second copy of an @mention (same channel + ts) finds the row and is acked
without a second job; if the row cannot be written (`RecorderBusy`), nothing is recorded and
the caller answers 5xx, so the platform delivers again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from redis import Redis
from rq import Retry

from agents.messages import InboundMessage
from jobs import queues
from storage import inbound
from storage.db import Database
from storage.models import utcnow
from storage.recorder import InboundRecorder

if TYPE_CHECKING:
    from jobs.pending import PendingTurns

log = logging.getLogger(__name__)

TURN_RETRY = Retry(max=3, interval=[2, 10, 60])
TURN_JOB = "jobs.turns.answer_job"


def turn_job_id(inbound_id: int, attempt: int = 0) -> str:
    return f"turn-{inbound_id}" if attempt == 0 else f"turn-{inbound_id}-retry{attempt}"


async def accept(recorder: InboundRecorder, pending: PendingTurns, msg: InboundMessage) -> int | None:
    """Record `msg` and leave its turn job to `pending`; the inbound id, or None if it needs no
    answer. Never touches Redis: the caller may ack as soon as this returns."""
    if msg.kind == "thread" and not await recorder.in_thread(msg):
        return None  # a reply in a channel thread is for the member only if it is in that thread
    inbound_id = await recorder.record(msg)
    if inbound_id is None:
        log.info("duplicate delivery dropped", extra={"member": msg.member_id, "event_id": msg.event_id})
        return None
    pending.add(inbound_id)
    return inbound_id


def enqueue_turn(redis: Redis, inbound_id: int, job_timeout: int, attempt: int = 0) -> None:
    enqueue_turns(redis, [(inbound_id, attempt)], job_timeout)


def enqueue_turns(redis: Redis, turns: Iterable[tuple[int, int]], job_timeout: int) -> None:
    """Enqueue the turn jobs of (inbound id, attempt) pairs in one round trip: RQ adds its
    commands to our pipeline instead of running two transactions of its own per job. Job ids
    are deterministic, and the turn is idempotent, so enqueueing one twice is harmless."""
    with redis.pipeline() as pipe:
        queue = queues.queue(redis, queues.TURNS)
        for inbound_id, attempt in turns:
            queue.enqueue(
                TURN_JOB,
                inbound_id,
                job_id=turn_job_id(inbound_id, attempt),
                job_timeout=job_timeout,
                retry=TURN_RETRY,
                result_ttl=600,
                failure_ttl=7 * 24 * 3600,
                pipeline=pipe,
            )
        pipe.execute()


async def retry(db: Database, pending: PendingTurns, inbound_id: int) -> bool:
    """Answer a message again after a failed turn (the "Try again" button); False if it was
    answered already or is being worked on. Like `accept`, the job is enqueued after the ack."""
    async with db.session() as session:
        row = await inbound.get(session, inbound_id)
        if row is None or row.status != "failed":
            return False
        await inbound.reset_for_retry(session, inbound_id)
        attempt = row.attempts
    pending.add(inbound_id, attempt)
    return True


async def sweep(db: Database, redis: Redis, *, job_timeout: int, older_than: timedelta = timedelta(minutes=3)) -> int:
    """Re-enqueue messages whose job was lost (a process died between commit and enqueue,
    or Redis lost its data). The turn is idempotent, so a spurious re-enqueue is harmless."""
    async with db.session() as session:
        stale = await inbound.unanswered_before(session, utcnow() - older_than)
    for row in stale:
        await asyncio.to_thread(enqueue_turn, redis, row.id, job_timeout, 1000 + row.attempts)
    return len(stale)
