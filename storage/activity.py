"""The activity feed: what members did, beside what people did."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.members import WORKSPACE_ID
from storage.models import Activity

_INSERT = insert(cast(Table, Activity.__table__))


def entry(
    *,
    member_id: str | None,
    actor_type: str,
    actor_id: str,
    action: str,
    description: str,
    entity_type: str | None = None,
    entity_id: str | None = None,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One feed row, to record now (`record`) or with others in one statement (`record_many`)."""
    return {"workspace_id": WORKSPACE_ID, "member_id": member_id, "actor_type": actor_type, "actor_id": actor_id,
            "action": action, "description": description[:2000], "entity_type": entity_type, "entity_id": entity_id,
            "run_id": run_id, "details": details or {}}


async def record(session: AsyncSession, **fields: Any) -> None:
    """Add one row to the feed (the arguments of `entry`)."""
    await record_many(session, [entry(**fields)])


async def record_many(session: AsyncSession, entries: list[dict[str, Any]]) -> None:
    """Add rows in one statement: a plain INSERT, not session.add + flush (the ORM's unit of
    work costs more than the rows)."""
    if entries:
        await session.execute(_INSERT, entries[0] if len(entries) == 1 else entries)


async def recent(session: AsyncSession, member_id: str, limit: int = 10) -> list[Activity]:
    """The member's latest feed rows, newest first."""
    rows = await session.execute(
        select(Activity).where(Activity.member_id == member_id).order_by(Activity.created_at.desc(), Activity.id.desc()).limit(limit)
    )
    return list(rows.scalars())
