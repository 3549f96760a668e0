"""Deciding approvals: the first decision wins and resumes the run; a timeout follows the
step's `on_timeout` (skip, abort or escalate)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from jobs.runs import queueing
from jobs.runs.definitions import find_step, load_version
from jobs.runs.origin import Origin
from jobs.runs.settings import settings
from jobs.runs.start import ChainTooDeep, publish
from jobs.runtime import Runtime
from jobs.workflows.definition import ApprovalStep
from storage import activity, approvals
from storage import workflows as store
from storage.models import utcnow

log = logging.getLogger(__name__)

DecisionKind = Literal["approved", "rejected", "expired", "cancelled"]


@dataclass(frozen=True)
class Decision:
    decision: DecisionKind
    by: str | None = None
    reason: str | None = None
    content: str | None = None


async def decide(rt: Runtime, approval_id: str, decision: Decision) -> bool:
    """Record a decision on a pending approval and resume its run. The first decision wins:
    a later (or concurrent) one changes nothing and returns False."""
    async with rt.db.session() as session:
        row = await approvals.decide(session, approval_id, decision.decision, decision.by, decision.reason)
        if row is None:
            return False
        output = {
            "decision": decision.decision,
            "approved": decision.decision == "approved",
            "by": decision.by,
            "at": utcnow().isoformat(),
            "reason": decision.reason,
            "content": decision.content if decision.content is not None else row.content,
        }
        assert row.run_id is not None and row.step_path is not None
        await store.update_step(session, row.run_id, row.step_path, where_status=("waiting",), status="done",
                                output=output, finished_at=utcnow(), wake_at=None)
        await activity.record(session, member_id=row.member_id, actor_type="person" if decision.by else "system",
                              actor_id=decision.by or "system", action=f"approval_{decision.decision}",
                              description=f"{decision.decision.capitalize()}: {row.title}", entity_type="approval",
                              entity_id=approval_id, run_id=row.run_id)
        run_id = row.run_id
        member_id = row.member_id
        run = await store.run(session, run_id)
        depth = (run.depth if run is not None else 0) + 1  # of the runs the event starts
        origin = Origin.from_json(run.origin) if run is not None else None  # passed on to them
    assert rt.redis is not None
    queueing.enqueue_advance(rt.redis, run_id, job_id=f"resume-{approval_id}")
    try:
        await publish(rt.db, rt.redis, "approval.decided", member_id,
                      {"approval_id": approval_id, "decision": decision.decision, "run_id": run_id, "by": decision.by},
                      settings(rt), depth, parent_origin=origin)
    except ChainTooDeep as exc:  # the decision stands; only the runs its event would start are not started
        log.warning("approval.decided of %s not delivered: %s", approval_id, exc, extra={"run_id": run_id})
        async with rt.db.session() as session:
            await activity.record(session, member_id=member_id, actor_type="system", actor_id="system",
                                  action="event_not_delivered", description=f"approval.decided not delivered: {exc}",
                                  entity_type="approval", entity_id=approval_id, run_id=run_id)
    return True


async def expire(rt: Runtime, approval_id: str) -> bool:
    """The approval's time is up: follow its `on_timeout` (skip, abort or escalate)."""
    escalated: tuple[str, str, datetime] | None = None
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
        if row is None or row.status != "pending" or row.run_id is None or row.step_path is None:
            return False
        run = await store.run(session, row.run_id)
        assert run is not None
        step = find_step(await load_version(session, run.workflow_id, run.version), row.step_path)
        assert isinstance(step, ApprovalStep)
        policy = step.approval.on_timeout
        if policy == "escalate" and step.approval.escalate_to and step.approval.escalate_to not in (row.approvers or []):
            wake_at = utcnow() + (step.approval.timeout_delta or timedelta(days=7))
            await approvals.escalate(session, approval_id, step.approval.escalate_to, wake_at)
            await store.update_step(session, row.run_id, row.step_path, wake_at=wake_at)
            escalated = (row.run_id, row.step_path, wake_at)
    if escalated:
        assert rt.redis is not None
        queueing.schedule_wake(rt.redis, *escalated)
        return True
    decided = await decide(rt, approval_id, Decision("expired", reason="timed out"))
    if decided and policy == "abort":
        async with rt.db.session() as session:
            await store.update_step(session, row.run_id, row.step_path, status="failed", error="approval timed out")
    return decided
