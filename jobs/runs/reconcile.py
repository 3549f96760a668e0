"""Repairing what a crash or a Redis loss left behind. Every repair is idempotent (claims and
unique rows), so several processes may reconcile at once.

Lost work is found by asking Redis, not by waiting out a long grace: a queued step whose job
is in no queue or registry is queued again, and a run with nothing in flight (or no step row
at all: a deferred first advance) whose advance job is gone advances; both within a reconcile
period or two. Work younger than `FRESH` is left alone: its job may be on its way to Redis."""

from __future__ import annotations

from datetime import datetime, timedelta

from jobs.runs import queueing
from jobs.runs.settings import settings
from jobs.runs.timers import step_job_timeout, wake
from jobs.runtime import Runtime
from storage import workflows as store
from storage.models import utcnow

FRESH = timedelta(seconds=5)  # at most: a reconcile period when that is shorter


async def reconcile(rt: Runtime, now: datetime | None = None) -> int:
    """Steps of dead workers go to others, queued steps whose job vanished are queued again,
    due timers fire, and runs whose next advance was lost advance. `now`: tests pass a clock."""
    assert rt.redis is not None
    now = now or utcnow()
    grace = settings(rt).grace
    fresh = min(FRESH, timedelta(seconds=rt.loaded.config.workers.reconcile_every))
    fixed = 0
    async with rt.db.session() as session:
        stale = await store.expired_steps(session, now=now)
        queued = await store.queued_steps(session, lease_before=now + grace - fresh)
        stalled = await store.stalled_runs(session, fresh, now=now)
    stale_keys = {(row.run_id, row.step_path) for row in stale}
    pending = queueing.pending_work(rt.redis) if queued or stalled else set()
    lost = [(run_id, path) for run_id, path in queued
            if (run_id, path) not in stale_keys and queueing.step_key(run_id, path) not in pending]
    for row in stale:
        if row.status in ("running", "queued"):
            fixed += await _requeue(rt, row.run_id, row.step_path, row.status, grace)
        else:
            fixed += 1
            await wake(rt, row.run_id, row.step_path)
    for run_id, path in lost:
        fixed += await _requeue(rt, run_id, path, "queued", grace)
    advance = [run_id for run_id in stalled if run_id not in pending]
    for run_id in advance:
        queueing.enqueue_advance(rt.redis, run_id)
    return fixed + len(advance)


async def _requeue(rt: Runtime, run_id: str, path: str, status: str, grace: timedelta) -> int:
    """Queue the step again (with its own job timeout) unless it moved on meanwhile."""
    assert rt.redis is not None
    async with rt.db.session() as session:
        requeue = await store.update_step(session, run_id, path, where_status=(status,), status="queued",
                                          lease_until=utcnow() + grace)
        timeout = await step_job_timeout(session, run_id, path) if requeue else 0
    if requeue:
        queueing.enqueue_step(rt.redis, run_id, path, timeout)
    return int(requeue)
