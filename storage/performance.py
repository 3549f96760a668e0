"""How each member is doing (seed 003's per-agent performance): tasks done and failed,
approvals asked and how they ended, the median time to a decision, and cost per day.

Every figure is counted by the database (GROUP BY), over a window that starts at `since`;
only the decision times of the window's decided approvals are read row by row, for the median."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import usage
from storage.models import Approval, InboundEvent, Workflow, WorkflowRun

DECISION_SAMPLE = 5000  # decided approvals read for the median, newest first


@dataclass
class Performance:
    member: str
    runs_done: int = 0
    runs_failed: int = 0
    messages_answered: int = 0
    messages_failed: int = 0
    approvals_asked: int = 0
    approvals_approved: int = 0
    approvals_rejected: int = 0
    approvals_expired: int = 0
    median_seconds_to_decision: float | None = None
    cost_per_day: dict[str, float] = field(default_factory=dict)

    @property
    def tasks_done(self) -> int:
        return self.runs_done + self.messages_answered

    @property
    def tasks_failed(self) -> int:
        return self.runs_failed + self.messages_failed

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks_done": self.tasks_done, "tasks_failed": self.tasks_failed}


async def of_members(session: AsyncSession, member_ids: list[str], since: datetime, zone: str) -> dict[str, Performance]:
    found = {m: Performance(m) for m in member_ids}

    def get(member: str) -> Performance | None:
        return found.get(member)

    runs = await session.execute(
        select(Workflow.member_id, WorkflowRun.status, func.count())
        .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
        .where(WorkflowRun.started_at >= since, WorkflowRun.status.in_(("completed", "failed")))
        .group_by(Workflow.member_id, WorkflowRun.status)
    )
    for member, status, count in runs.all():
        if (p := get(member)) is not None:
            if status == "completed":
                p.runs_done += int(count)
            else:
                p.runs_failed += int(count)
    messages = await session.execute(
        select(InboundEvent.member_id, InboundEvent.status, func.count())
        .where(InboundEvent.received_at >= since, InboundEvent.status.in_(("answered", "failed")))
        .group_by(InboundEvent.member_id, InboundEvent.status)
    )
    for member, status, count in messages.all():
        if (p := get(member)) is not None:
            if status == "answered":
                p.messages_answered += int(count)
            else:
                p.messages_failed += int(count)
    asked = await session.execute(
        select(Approval.member_id, Approval.status, func.count()).where(Approval.created_at >= since)
        .group_by(Approval.member_id, Approval.status)
    )
    for member, status, count in asked.all():
        if (p := get(member)) is not None:
            p.approvals_asked += int(count)
            if status in ("approved", "rejected", "expired"):
                setattr(p, f"approvals_{status}", getattr(p, f"approvals_{status}") + int(count))
    decided = await session.execute(
        select(Approval.member_id, Approval.created_at, Approval.decided_at)
        .where(Approval.created_at >= since, Approval.decided_at.is_not(None), Approval.status.in_(("approved", "rejected")))
        .order_by(Approval.created_at.desc()).limit(DECISION_SAMPLE)
    )
    waits: dict[str, list[float]] = {}
    for member, created, decided_at in decided.all():
        if decided_at is None:
            continue
        waits.setdefault(member, []).append(max(0.0, (decided_at - created).total_seconds()))
    for member, values in waits.items():
        if (p := get(member)) is not None:
            p.median_seconds_to_decision = round(statistics.median(values), 1)
    for member in member_ids:
        days = await usage.by_day(session, zone, usage.Scope(since=since, member_id=member))
        found[member].cost_per_day = {day: round(f.cost, 6) for day, f in sorted(days.items())}
    return found
