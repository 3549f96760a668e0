"""Cancelling a run: it stops, and its pending approvals are cancelled with it.

Everything happens in one transaction with the run's row locked: the run becomes `cancelled`,
its unfinished steps `cancelled`, each pending approval is decided `cancelled` (the first
decision wins, so an approval decided a moment earlier stays as it was) with an
`approval_cancelled` activity row, and a `run_cancelled` row is written. Nothing is taken out
of Redis: a queued step's job or a timer that fires later finds the run finished and ends, and
a worker running one of its steps loses its lease at the next heartbeat and stops.

The returned approval ids are those this call cancelled: callers (the CLI, chat tools, Slack)
use them to update the approvals' messages."""

from __future__ import annotations

from jobs.runs import progress
from jobs.runtime import Runtime
from storage import activity, approvals
from storage import workflows as store
from storage.db import Database
from storage.models import Workflow

NOT_OPEN = store.FINISHED_RUN  # a skipped schedule slot is a finished record too
REASON = "run cancelled"


class NotCancellable(Exception):
    """The run has finished already (completed, failed, skipped or cancelled): nothing changed."""


async def cancel_run(rt_or_db: Runtime | Database, run_id: str, by: str | None) -> list[str]:
    """Cancel the run and its pending approvals; returns the ids of the approvals cancelled.
    `by`: the person (person id or platform user id) who cancelled it, None for the system.
    Raises LookupError for an unknown run and `NotCancellable` for a finished one."""
    db = rt_or_db.db if isinstance(rt_or_db, Runtime) else rt_or_db
    actor_type, actor_id = ("person", by) if by else ("system", "system")
    cancelled: list[str] = []
    async with db.session() as session:
        run = await store.run(session, run_id, lock=True)
        if run is None:
            raise LookupError(f"no run {run_id!r}")
        if run.status in NOT_OPEN:
            raise NotCancellable(f"run {run_id} is already {run.status}")
        workflow = await session.get(Workflow, run.workflow_id)
        name = workflow.name if workflow is not None else str(run.workflow_id)
        member_id = workflow.member_id if workflow is not None else None
        await store.finish_run(session, run_id, "cancelled", error=f"cancelled by {by}" if by else "cancelled")
        await store.cancel_open_steps(session, run_id, REASON)
        feed = []
        for approval_id in await approvals.pending_for_run(session, run_id):
            row = await approvals.decide(session, approval_id, "cancelled", by, REASON)
            if row is None:  # decided by someone else since it was read: that decision stands
                continue
            cancelled.append(approval_id)
            feed.append(activity.entry(member_id=row.member_id, actor_type=actor_type, actor_id=actor_id,
                                       action="approval_cancelled", description=f"Cancelled (run cancelled): {row.title}",
                                       entity_type="approval", entity_id=approval_id, run_id=run_id))
        feed.append(activity.entry(member_id=member_id, actor_type=actor_type, actor_id=actor_id, action="run_cancelled",
                                   description=f"Cancelled {name}" + (f" and {len(cancelled)} pending approval(s)" if cancelled else ""),
                                   entity_type="workflow", entity_id=name, run_id=run_id,
                                   details={"approvals": cancelled}))
        await activity.record_many(session, feed)
        origin = run.origin
    if isinstance(rt_or_db, Runtime):  # after the commit: its thread shows it, its requester may hear it
        progress.note(rt_or_db.redis, run_id, origin, finished=True)
    return cancelled
