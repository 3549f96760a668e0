"""Approval requests: a question to people before something leaves the team.

The first decision wins: a final decision is an UPDATE guarded by `status = 'pending'`, and
only the caller whose update changed the row acts on it. Partial decisions (a quorum) and
escalations change the row under a guard on `revision`, so concurrent writers never lose one
another's change: the loser re-reads and tries again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Approval, utcnow


async def open_request(
    session: AsyncSession, *, approval_id: str, run_id: str, step_path: str, member_id: str, title: str,
    content: str, approvers: list[str], expires_at: datetime | None, workflow: str | None = None, quorum: int = 1,
    remind_at: datetime | None = None,
) -> tuple[Approval, bool]:
    """Create the request unless it exists (a retried step finds the first one); the row,
    and whether this call created it."""
    created = await insert_or_ignore(
        session,
        Approval,
        {"id": approval_id, "run_id": run_id, "step_path": step_path, "member_id": member_id, "title": title,
         "content": content, "approvers": approvers, "status": "pending", "expires_at": expires_at, "workflow": workflow,
         "quorum": quorum, "remind_at": remind_at, "decisions": [], "messages": [], "revision": 0, "created_at": utcnow()},
    )
    row = await get(session, approval_id)
    assert row is not None
    return row, created


async def get(session: AsyncSession, approval_id: str) -> Approval | None:
    return await session.get(Approval, approval_id, populate_existing=True)


async def decide(session: AsyncSession, approval_id: str, status: str, by: str | None, reason: str | None,
                 entry: dict[str, Any] | None = None) -> Approval | None:
    """Apply the final decision if the request is still pending; the row, or None if it was
    not. `entry` (who, what, when, content) is appended to the decisions."""
    current = await get(session, approval_id)
    if current is None or current.status != "pending":
        return None
    values: dict[str, Any] = {"status": status, "decided_by": by, "decided_at": utcnow(), "reason": reason,
                              "revision": Approval.revision + 1}
    if entry is not None:
        values["decisions"] = [*(current.decisions or []), entry]
    result = await session.execute(
        update(Approval).where(Approval.id == approval_id, Approval.status == "pending").values(**values)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return await get(session, approval_id)


async def add_decision(session: AsyncSession, approval_id: str, revision: int, entry: dict[str, Any]) -> bool:
    """Append one person's decision toward a quorum, if nobody changed the row since it was
    read at `revision`; False means re-read and try again."""
    current = await get(session, approval_id)
    if current is None or current.revision != revision or current.status != "pending":
        return False
    result = await session.execute(
        update(Approval).where(Approval.id == approval_id, Approval.revision == revision, Approval.status == "pending")
        .values(decisions=[*(current.decisions or []), entry], revision=revision + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_copy(session: AsyncSession, approval_id: str, copy: dict[str, Any]) -> None:
    """Remember where one copy of the request was posted (guarded like a decision)."""
    for _ in range(20):
        current = await get(session, approval_id)
        if current is None:
            return
        result = await session.execute(
            update(Approval).where(Approval.id == approval_id, Approval.revision == current.revision)
            .values(messages=[*(current.messages or []), copy], revision=current.revision + 1)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return


async def mark_reminded(session: AsyncSession, approval_id: str) -> bool:
    result = await session.execute(
        update(Approval).where(Approval.id == approval_id, Approval.status == "pending", Approval.reminded_at.is_(None))
        .values(reminded_at=utcnow(), revision=Approval.revision + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def pending_for_run(session: AsyncSession, run_id: str) -> list[str]:
    """Ids of the run's approvals still pending, oldest first."""
    rows = await session.execute(
        select(Approval.id).where(Approval.run_id == run_id, Approval.status == "pending").order_by(Approval.created_at, Approval.id)
    )
    return list(rows.scalars())


async def escalate(session: AsyncSession, approval_id: str, to: str, expires_at: datetime | None,
                   remind_at: datetime | None = None) -> None:
    """Add `to` to the approvers with a fresh expiry, and a fresh reminder (the new approver
    is reminded like the first ones were)."""
    row = await get(session, approval_id)
    if row is not None:
        await session.execute(
            update(Approval).where(Approval.id == approval_id)
            .values(approvers=[*(row.approvers or []), to], expires_at=expires_at, remind_at=remind_at, reminded_at=None,
                    revision=Approval.revision + 1)
        )


async def listing(session: AsyncSession, *, pending_only: bool = True, limit: int = 200) -> list[Approval]:
    query = select(Approval).order_by(Approval.created_at.desc()).limit(limit)
    if pending_only:
        query = query.where(Approval.status == "pending")
    return list((await session.execute(query)).scalars())


async def by_step(session: AsyncSession, run_id: str) -> dict[str, str]:
    """step path -> approval id, for one run."""
    rows = await session.execute(select(Approval.step_path, Approval.id).where(Approval.run_id == run_id))
    return {str(path): str(approval_id) for path, approval_id in rows.all()}


async def feedback(session: AsyncSession, member_id: str, workflow: str, limit: int = 5) -> list[Approval]:
    """This member's latest decided requests of `workflow` that carry a lesson: rejections
    and approvals after an edit, newest first."""
    rows = await session.execute(
        select(Approval).where(Approval.member_id == member_id, Approval.workflow == workflow,
                               or_(Approval.status == "rejected", Approval.status == "approved"))
        .order_by(Approval.decided_at.desc()).limit(limit * 4)
    )
    found = [r for r in rows.scalars() if r.status == "rejected" or any(d.get("edited") for d in r.decisions or [])]
    return found[:limit]


async def pending_of_member(session: AsyncSession, member_id: str, limit: int = 200) -> list[Approval]:
    """The member's pending requests, oldest first."""
    rows = await session.execute(
        select(Approval).where(Approval.member_id == member_id, Approval.status == "pending")
        .order_by(Approval.created_at, Approval.id).limit(limit)
    )
    return list(rows.scalars())
