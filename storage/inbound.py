"""Inbound messages: recorded before the platform is acked, answered later by a job.

Statuses: `received` (waiting for a turn), `working` (a turn has taken it; `lease_until` says
until when), `answered`, `failed` (with `error`: the reason, shown by `teammates status`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InboundEvent, utcnow

PENDING = ("received", "working")


async def get(session: AsyncSession, inbound_id: int) -> InboundEvent | None:
    return await session.get(InboundEvent, inbound_id, populate_existing=True)


def conversation_key(event: InboundEvent) -> str:
    """The conversation's thread key: "" for a DM's main line, else the thread's root ts."""
    return event.thread_ts or ("" if event.kind in ("dm", "terminal") else event.ts)


async def pending_in(session: AsyncSession, event: InboundEvent) -> list[InboundEvent]:
    """Every message of `event`'s conversation still waiting for an answer, oldest first."""
    key = conversation_key(event)
    rows = await session.execute(
        select(InboundEvent)
        .where(
            InboundEvent.member_id == event.member_id,
            InboundEvent.platform == event.platform,
            InboundEvent.channel == event.channel,
            InboundEvent.status.in_(PENDING),
            or_(InboundEvent.thread_ts == key, InboundEvent.ts == key) if key else InboundEvent.thread_ts.is_(None),
        )
        .order_by(InboundEvent.id)
        .execution_options(populate_existing=True)
    )
    return [row for row in rows.scalars() if conversation_key(row) == key]


async def take(session: AsyncSession, ids: Sequence[int], lease: timedelta) -> None:
    """Count one more attempt for each message a turn is now answering (the holder of the
    conversation's turn calls this, so no other worker takes them meanwhile)."""
    await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id.in_(ids), InboundEvent.status.in_(PENDING))
        .values(attempts=InboundEvent.attempts + 1, status="working", lease_until=utcnow() + lease)
    )


async def mark_answered(session: AsyncSession, ids: Sequence[int], reply_id: str) -> int:
    """How many were still unanswered: 0 when another worker recorded this reply already, and
    the caller then records nothing more, so the reply is stored once."""
    result = await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id.in_(ids), InboundEvent.status != "answered")
        .values(status="answered", reply_ts=reply_id, answered_at=utcnow(), error=None, lease_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def mark_failed(session: AsyncSession, ids: Sequence[int], error: str) -> None:
    await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id.in_(ids), InboundEvent.status != "answered")
        .values(status="failed", error=error[:2000], lease_until=None)
    )


async def note_error(session: AsyncSession, ids: Sequence[int], error: str) -> None:
    """An attempt failed and another may follow: keep the reason, free the message for it."""
    await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id.in_(ids), InboundEvent.status.in_(PENDING))
        .values(error=error[:2000], lease_until=None)
    )


async def reset_for_retry(session: AsyncSession, inbound_id: int) -> None:
    await session.execute(update(InboundEvent).where(InboundEvent.id == inbound_id).values(status="received"))


async def unanswered_before(session: AsyncSession, cutoff: datetime, limit: int = 100) -> list[InboundEvent]:
    """Messages received before `cutoff` and still not answered (their job was lost)."""
    rows = await session.execute(
        select(InboundEvent)
        .where(
            InboundEvent.status.in_(PENDING),
            InboundEvent.received_at < cutoff,
            or_(InboundEvent.lease_until.is_(None), InboundEvent.lease_until < utcnow()),
        )
        .order_by(InboundEvent.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def failed(session: AsyncSession, limit: int = 20) -> tuple[int, list[InboundEvent]]:
    """How many messages ended `failed`, and the latest `limit` of them."""
    count = await session.scalar(select(func.count()).select_from(InboundEvent).where(InboundEvent.status == "failed"))
    rows = await session.execute(
        select(InboundEvent).where(InboundEvent.status == "failed").order_by(InboundEvent.id.desc()).limit(limit)
    )
    return int(count or 0), list(rows.scalars())


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
