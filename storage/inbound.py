"""Inbound messages: recorded before the platform is acked, answered later by a job."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InboundEvent, utcnow


async def get(session: AsyncSession, inbound_id: int) -> InboundEvent | None:
    return await session.get(InboundEvent, inbound_id)


async def claim(session: AsyncSession, inbound_id: int, lease: timedelta) -> bool:
    """Take the message for one attempt. Only one worker holds it at a time; a worker that
    died loses it when its lease runs out, so a retry (or the sweeper) can take it over."""
    now = utcnow()
    result = await session.execute(
        update(InboundEvent)
        .where(
            InboundEvent.id == inbound_id,
            InboundEvent.status != "answered",
            or_(InboundEvent.lease_until.is_(None), InboundEvent.lease_until < now),
        )
        .values(attempts=InboundEvent.attempts + 1, status="working", lease_until=now + lease)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_answered(session: AsyncSession, inbound_id: int, reply_ts: str) -> bool:
    """False when it was answered already (by a worker whose lease had run out, say): the
    caller then records nothing more, so the reply is stored once."""
    result = await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id == inbound_id, InboundEvent.status != "answered")
        .values(status="answered", reply_ts=reply_ts, answered_at=utcnow(), error=None, lease_until=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_failed(session: AsyncSession, inbound_id: int, error: str) -> None:
    await session.execute(update(InboundEvent).where(InboundEvent.id == inbound_id).values(status="failed", error=error[:2000], lease_until=None))


async def reset_for_retry(session: AsyncSession, inbound_id: int) -> None:
    await session.execute(update(InboundEvent).where(InboundEvent.id == inbound_id).values(status="received"))


async def unanswered_before(session: AsyncSession, cutoff: datetime, limit: int = 100) -> list[InboundEvent]:
    """Messages received before `cutoff` and still not answered (their job was lost)."""
    rows = await session.execute(
        select(InboundEvent)
        .where(
            InboundEvent.status.in_(("received", "working")),
            InboundEvent.received_at < cutoff,
            or_(InboundEvent.lease_until.is_(None), InboundEvent.lease_until < utcnow()),
        )
        .order_by(InboundEvent.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def awaiting_first_turn(session: AsyncSession, limit: int = 1000) -> list[int]:
    """Ids of messages recorded and never taken by a worker (newest `limit`), for the web
    process's start-up catch-up of hand-offs a dead process left unfinished."""
    rows = await session.execute(
        select(InboundEvent.id)
        .where(InboundEvent.status == "received", InboundEvent.attempts == 0)
        .order_by(InboundEvent.id.desc())
        .limit(limit)
    )
    return sorted(rows.scalars())
