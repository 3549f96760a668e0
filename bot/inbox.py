"""What the web process does with a message once an adapter has translated it: the durable
hand-off to storage and RQ (see `jobs.intake`), shared by every platform."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram
from redis import Redis

from agents.messages import InboundMessage
from jobs import intake
from storage.db import Database
from storage.recorder import InboundRecorder, recorder_for

ACCEPTED = Counter("teammates_inbound_total", "Inbound messages by outcome", ["member", "platform", "outcome"])
HANDOFF = Histogram(
    "teammates_handoff_seconds",
    "Time to record and enqueue an inbound message (inside the platform's ack)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@dataclass
class Inbox:
    db: Database
    redis: Redis
    job_timeout: int
    recorder: InboundRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.recorder = recorder_for(self.db)

    async def accept(self, msg: InboundMessage) -> int | None:
        """Record and enqueue; raises when that failed, so the adapter answers 5xx."""
        started = time.perf_counter()
        try:
            inbound_id = await intake.accept(self.recorder, self.redis, msg, job_timeout=self.job_timeout)
        except Exception:
            ACCEPTED.labels(msg.member_id, msg.platform, "error").inc()
            raise
        HANDOFF.observe(time.perf_counter() - started)
        ACCEPTED.labels(msg.member_id, msg.platform, "queued" if inbound_id else "skipped").inc()
        return inbound_id

    async def retry(self, inbound_id: int) -> bool:
        return await intake.retry(self.db, self.redis, inbound_id, job_timeout=self.job_timeout)
