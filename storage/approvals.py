"""Approval requests: a question to people before something leaves the team.

The first decision wins: a decision is an UPDATE guarded by `status = 'pending'`, and only the
caller whose update changed the row acts on it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Approval, utcnow


async def open_request(
    session: AsyncSession, *, approval_id: str, run_id: str, step_path: str, member_id: str, title: str,
    content: str, approvers: list[str], expires_at: datetime | None,
) -> Approval:
    await insert_or_ignore(
        session,
        Approval,
        {"id": approval_id, "run_id": run_id, "step_path": step_path, "member_id": member_id, "title": title,
         "content": content, "approvers": approvers, "status": "pending", "expires_at": expires_at},
    )
    row = await get(session, approval_id)
    assert row is not None
    return row


async def get(session: AsyncSession, approval_id: str) -> Approval | None:
    return await session.get(Approval, approval_id, populate_existing=True)


async def decide(session: AsyncSession, approval_id: str, status: str, by: str | None, reason: str | None) -> Approval | None:
    """Apply the decision if the request is still pending; the row, or None if it was not."""
    result = await session.execute(
        update(Approval)
        .where(Approval.id == approval_id, Approval.status == "pending")
        .values(status=status, decided_by=by, decided_at=utcnow(), reason=reason)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return await get(session, approval_id)


async def pending_for_run(session: AsyncSession, run_id: str) -> list[str]:
    """Ids of the run's approvals still pending, oldest first."""
    rows = await session.execute(
        select(Approval.id).where(Approval.run_id == run_id, Approval.status == "pending").order_by(Approval.created_at, Approval.id)
    )
    return list(rows.scalars())


async def escalate(session: AsyncSession, approval_id: str, to: str, expires_at: datetime) -> None:
    row = await get(session, approval_id)
    if row is not None:
        await session.execute(
            update(Approval).where(Approval.id == approval_id).values(approvers=[*(row.approvers or []), to], expires_at=expires_at)
        )
