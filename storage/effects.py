"""Effect records: an outbound effect is written `started` before it happens and `done`
after, so a retry after a crash skips it, reconciles it, or does it — never twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Effect


async def begin(session: AsyncSession, effect_id: str, kind: str) -> Effect:
    """Create the `started` row if missing; return the row as it now stands."""
    await insert_or_ignore(session, Effect, {"id": effect_id, "kind": kind, "status": "started", "result": {}})
    row = await session.get(Effect, effect_id, populate_existing=True)
    assert row is not None
    return row


async def begin_with(session: AsyncSession, effect_id: str, kind: str, intent: dict[str, Any]) -> tuple[Effect, bool]:
    """Like `begin`, with the intent stored in the same insert; (row, True if this call made it)."""
    inserted = await insert_or_ignore(session, Effect, {"id": effect_id, "kind": kind, "status": "started", "result": intent})
    row = await session.get(Effect, effect_id, populate_existing=True)
    assert row is not None
    return row, inserted


async def finish(session: AsyncSession, effect_id: str, result: dict[str, Any]) -> None:
    await session.execute(update(Effect).where(Effect.id == effect_id).values(status="done", result=result))


async def get(session: AsyncSession, effect_id: str) -> Effect | None:
    return await session.get(Effect, effect_id, populate_existing=True)


async def remember_intent(session: AsyncSession, effect_id: str, intent: dict[str, Any]) -> None:
    """Store what the effect will do (e.g. the reply's text) before doing it."""
    await session.execute(update(Effect).where(Effect.id == effect_id, Effect.status == "started").values(result=intent))


async def done_with_prefix(session: AsyncSession, prefix: str, limit: int = 1000) -> list[Effect]:
    """The finished effects whose ids start with `prefix` (a run's agent-step tool effects:
    `<run id>-...`), oldest id first."""
    rows = await session.execute(select(Effect).where(Effect.id.startswith(prefix, autoescape=True), Effect.status == "done")
                                 .order_by(Effect.id).limit(limit))
    return list(rows.scalars())
async def claim(session: AsyncSession, effect_id: str, from_status: str, to_status: str, result: dict[str, Any] | None = None) -> bool:
    """Move the row from `from_status` to `to_status` (and its result to `result`, if given);
    True only for the one caller that did (a guarded UPDATE: two concurrent claims never both
    win)."""
    values: dict[str, Any] = {"status": to_status} if result is None else {"status": to_status, "result": result}
    done = await session.execute(update(Effect).where(Effect.id == effect_id, Effect.status == from_status).values(**values))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]
