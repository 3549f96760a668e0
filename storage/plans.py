"""Plans: workflows a member proposed in a conversation, until the person starts them.

A plan moves on only through `settle`, an UPDATE guarded by its current status: of two
concurrent moves (a Start click and a typed "yes", two clicks) exactly one changes the row,
and only that caller acts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Plan, Workflow, utcnow

OPEN = ("proposed",)


async def add(session: AsyncSession, plan: Plan) -> Plan:
    session.add(plan)
    await session.flush()
    return plan


async def get(session: AsyncSession, plan_id: str) -> Plan | None:
    return await session.get(Plan, plan_id, populate_existing=True)


async def set_message(session: AsyncSession, plan_id: str, message: str | None) -> None:
    await session.execute(update(Plan).where(Plan.id == plan_id).values(message=message))


async def settle(session: AsyncSession, plan_id: str, status: str, by: str | None, *, where: tuple[str, ...] = OPEN) -> bool:
    """Move the plan to `status` if it is still in one of `where`; True when this call did."""
    result = await session.execute(
        update(Plan).where(Plan.id == plan_id, Plan.status.in_(where)).values(status=status, decided_by=by, decided_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def open_in(session: AsyncSession, member_id: str, platform: str, conversation: str, thread: str | None) -> list[Plan]:
    """The proposed plans of one conversation (a DM's main line, or one thread), newest first."""
    query = select(Plan).where(Plan.member_id == member_id, Plan.platform == platform, Plan.conversation == conversation,
                               Plan.status.in_(OPEN))
    query = query.where(Plan.thread.is_(None) if thread is None else Plan.thread == thread)
    return list((await session.execute(query.order_by(Plan.created_at.desc()))).scalars())


async def due(session: AsyncSession, now: datetime, limit: int = 200) -> list[str]:
    """Proposed plans past their expiry."""
    query = select(Plan.id).where(Plan.status.in_(OPEN), Plan.expires_at <= now).limit(limit)
    return list((await session.execute(query)).scalars())


async def set_home(session: AsyncSession, workflow_id: int, home: dict[str, Any]) -> None:
    await session.execute(update(Workflow).where(Workflow.id == workflow_id).values(home=home))
