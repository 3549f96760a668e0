"""What the web process does with a message once an adapter has translated it: the durable
hand-off to storage, then to RQ after the ack (see `jobs.intake`), shared by every platform."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram
from redis import Redis

from agents.messages import InboundAction, InboundMessage
from jobs import actions, intake
from jobs.pending import PendingTurns
from storage.db import Database
from storage.recorder import InboundRecorder, recorder_for

log = logging.getLogger(__name__)

# The longest an ack waits for SQLite's write lock before it answers 5xx (nothing recorded,
# so the platform's redelivery is safe): Slack gives us 3 s, the other acks must go on.
ACK_BUSY_WAIT = 0.1

ACCEPTED = Counter("teammates_inbound_total", "Inbound messages by outcome", ["member", "platform", "outcome"])
HANDOFF = Histogram(
    "teammates_handoff_seconds",
    "Time to record an inbound message (inside the platform's ack; the job is enqueued after it)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PENDING = Gauge("teammates_handoff_pending", "Recorded messages whose turn job is not in Redis yet")


@dataclass
class Inbox:
    db: Database
    redis: Redis
    job_timeout: int
    recorder: InboundRecorder = field(init=False)
    pending: PendingTurns = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.recorder = recorder_for(self.db, busy_wait=ACK_BUSY_WAIT)
        self.pending = PendingTurns(self.redis, self.job_timeout)
        PENDING.set_function(lambda: len(self.pending))

    async def accept(self, msg: InboundMessage) -> int | None:
        """Record; raises when that failed (`RecorderBusy` included), so the adapter answers
        5xx. Once this returns the message will be answered: the adapter acks."""
        started = time.perf_counter()
        try:
            inbound_id = await intake.accept(self.recorder, self.pending, msg)
        except Exception:
            ACCEPTED.labels(msg.member_id, msg.platform, "error").inc()
            raise
        HANDOFF.observe(time.perf_counter() - started)
        ACCEPTED.labels(msg.member_id, msg.platform, "queued" if inbound_id else "skipped").inc()
        return inbound_id

    async def act(self, action: InboundAction) -> int | None:
        """Record a click or a form submission (the adapter acks once this returns); its job
        is enqueued beside the ack, in a thread. If Redis cannot take it now, the sweeper
        enqueues it within seconds."""
        action_id = await actions.accept(self.db, action)
        if action_id is None:
            log.info("replayed action dropped", extra={"member": action.member_id, "action": action.action})
            return None
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(actions.enqueue, self.redis, action_id))
        self._tasks.add(task)
        task.add_done_callback(self._enqueued)
        return action_id

    def _enqueued(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("action job not enqueued (%s); the sweeper will", type(task.exception()).__name__)
