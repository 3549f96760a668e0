"""Clicks and form submissions between the ack and their job.

A row is written before the platform is acked (interactions are never delivered twice, so
an unrecorded click would be lost), and a replay of the same delivery (same key) writes
nothing. A job handles each row once: `finish` is guarded by the status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agents.messages import InboundAction as Action
from agents.messages import MessageRef
from storage.inserts import insert_or_ignore
from storage.models import InboundAction, utcnow


async def record(session: AsyncSession, action: Action) -> int | None:
    """The new row's id; None when this delivery was recorded before (a replay)."""
    where = action.where
    inserted = await insert_or_ignore(session, InboundAction, {
        "member_id": action.member_id, "platform": action.platform, "key": action.key[:200], "action": action.action,
        "object_id": action.object_id[:255], "user_id": action.user_id,
        "conversation": where.conversation if where else None, "message": where.message if where else None,
        "thread": where.thread if where else None, "values": action.values, "status": "received", "received_at": utcnow(),
    })
    if not inserted:
        return None
    row = (await session.execute(select(InboundAction.id).where(
        InboundAction.member_id == action.member_id, InboundAction.platform == action.platform,
        InboundAction.key == action.key[:200]))).scalar_one()
    return int(row)


async def get(session: AsyncSession, action_id: int) -> InboundAction | None:
    return await session.get(InboundAction, action_id, populate_existing=True)


def as_action(row: InboundAction) -> Action:
    where = MessageRef(row.conversation, row.message, row.thread) if row.conversation else None
    return Action(member_id=row.member_id, platform=row.platform, key=row.key, action=row.action, object_id=row.object_id,
                  user_id=row.user_id, where=where, values=dict(row.values or {}))


async def finish(session: AsyncSession, action_id: int, status: str, outcome: str) -> bool:
    """Mark the action handled; False when another job did already."""
    result = await session.execute(
        update(InboundAction).where(InboundAction.id == action_id, InboundAction.status == "received")
        .values(status=status, outcome=outcome[:2000], handled_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def unhandled_before(session: AsyncSession, cutoff: datetime, since: datetime, limit: int = 100) -> list[int]:
    """Actions recorded between `since` and `cutoff` and not handled yet (their job was
    lost). Older ones are left alone: a click nobody could handle for that long is stale."""
    rows = await session.execute(
        select(InboundAction.id).where(InboundAction.status == "received", InboundAction.received_at < cutoff,
                                       InboundAction.received_at > since)
        .order_by(InboundAction.id).limit(limit)
    )
    return [int(r) for r in rows.scalars()]
