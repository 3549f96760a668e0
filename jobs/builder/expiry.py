"""The reconciler's pass over plans: a plan not started in time expires (a job per plan does
it and updates the card). Light on purpose: it runs in the web process's reconciler."""

from __future__ import annotations

import asyncio
from datetime import datetime

from redis import Redis

from jobs import queues
from storage import plans as store
from storage.db import Database
from storage.models import utcnow

EXPIRE_JOB = "jobs.builder.plans.expire_job"


async def expire_due(db: Database, redis: Redis, now: datetime | None = None) -> int:
    """Queue the expiry of every plan past its time (one job per plan, unique by its id)."""
    async with db.session() as session:
        due = await store.due(session, now or utcnow())
    queue = queues.queue(redis, queues.TURNS)
    for plan_id in due:
        await asyncio.to_thread(queue.enqueue, EXPIRE_JOB, plan_id, job_id=f"plan-expire-{plan_id}", result_ttl=600,
                                failure_ttl=24 * 3600)
    return len(due)
