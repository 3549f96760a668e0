"""Timers: a wait that is over, an approval that expires, a retry whose backoff has passed, an
effect step held by its member's cap (`jobs.spend.caps`) whose cap has reset.

A timer is an RQ scheduled job; the step row's `wake_at` is the truth, so a timer that fires
early waits on and one Redis lost is fired by the reconciler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.runs import queueing
from jobs.runs.approvals import due
from jobs.runs.definitions import find_step, load_version
from jobs.runs.settings import settings
from jobs.runtime import Runtime
from jobs.spend.caps import HELD
from storage import workflows as store
from storage.models import utcnow


async def wake(rt: Runtime, run_id: str, path: str) -> str:
    """A timer fired: finish a wait, expire an approval, or retry a failed attempt."""
    assert rt.redis is not None
    async with rt.db.session() as session:
        row = (await store.steps(session, run_id)).get(path)
        if row is None or row.wake_at is None:
            return "nothing to wake"
        if row.wake_at > datetime.now(UTC):
            # RQ's scheduler keeps whole seconds: a timer may fire a little early. Wait on.
            queueing.schedule_wake(rt.redis, run_id, path, row.wake_at)
            return "not due yet"
        approval_id = (row.input or {}).get("approval_id")
        held = row.status == "waiting" and bool((row.input or {}).get(HELD))
        if row.status == "retrying" or held:
            # queued with a lease like any queued step, so the reconciler sees a lost job; a
            # held effect step runs again and takes a slot of its member's cap then
            if not await store.update_step(session, run_id, path, where_status=(row.status,), status="queued", wake_at=None,
                                           lease_until=utcnow() + grace(rt), **({"error": None} if held else {})):
                return "already requeued"
            timeout = await step_job_timeout(session, run_id, path)
            action = "retry"
        elif row.status == "waiting" and approval_id:
            action = "expire"
        elif row.status == "waiting":
            if not await store.update_step(session, run_id, path, where_status=("waiting",), status="done", finished_at=utcnow(), wake_at=None):
                return "already woken"
            action = "advance"
        else:
            return f"step {row.status}"
    if action == "retry":
        queueing.enqueue_step(rt.redis, run_id, path, timeout)
        return "retry queued"
    if action == "expire":
        return f"approval {await due(rt, str(approval_id))}"
    queueing.enqueue_advance(rt.redis, run_id)
    return "woken"


def grace(rt: Runtime) -> timedelta:
    return settings(rt).grace


async def step_job_timeout(session: object, run_id: str, path: str) -> int:
    """RQ's limit for a step's job, from the step's own `timeout` (a retry keeps it)."""
    run = await store.run(session, run_id)  # type: ignore[arg-type]
    if run is None:
        return queueing.DEFAULT_STEP_TIMEOUT
    try:
        return queueing.job_timeout(find_step(await load_version(session, run.workflow_id, run.version), path))
    except LookupError:
        return queueing.DEFAULT_STEP_TIMEOUT
