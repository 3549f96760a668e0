"""Repairing what a crash or a Redis loss left behind. Every repair is idempotent (claims and
unique rows), so several processes may reconcile at once."""

from __future__ import annotations

from jobs.runs import queueing
from jobs.runs.settings import settings
from jobs.runs.timers import step_job_timeout, wake
from jobs.runtime import Runtime
from storage import workflows as store
from storage.models import utcnow


async def reconcile(rt: Runtime) -> int:
    """Steps of dead workers go to others, queued steps whose job vanished are queued again,
    due timers fire, and runs whose next advance was lost advance."""
    assert rt.redis is not None
    grace = settings(rt).grace
    fixed = 0
    async with rt.db.session() as session:
        stale = await store.expired_steps(session)
        stalled = await store.stalled_runs(session, grace)
    for row in stale:
        if row.status in ("running", "queued"):
            async with rt.db.session() as session:
                requeue = await store.update_step(
                    session, row.run_id, row.step_path, where_status=(row.status,), status="queued", lease_until=utcnow() + grace
                )
                timeout = await step_job_timeout(session, row.run_id, row.step_path) if requeue else 0
            if requeue:
                fixed += 1
                queueing.enqueue_step(rt.redis, row.run_id, row.step_path, timeout)
        else:
            fixed += 1
            await wake(rt, row.run_id, row.step_path)
    for run_id in stalled:
        queueing.enqueue_advance(rt.redis, run_id)
    return fixed + len(stalled)
