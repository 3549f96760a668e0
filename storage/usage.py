"""Token usage per LLM call: the basis for quotas, costs and the cache hit rate."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import LlmUsage


async def record(
    session: AsyncSession,
    *,
    member_id: str,
    user_id: str | None,
    conversation_id: int | None,
    run_id: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    workflow: str | None = None,
    cost: float = 0.0,
) -> None:
    """One LLM call. A conversation turn has `conversation_id` and `user_id`; a workflow's
    agent step has `workflow` (its name) and `run_id` (the workflow run's id)."""
    session.add(
        LlmUsage(
            member_id=member_id,
            user_id=user_id,
            conversation_id=conversation_id,
            run_id=run_id,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            workflow=workflow,
            cost=cost,
        )
    )
    await session.flush()


async def totals_by_member(session: AsyncSession) -> dict[str, dict[str, int]]:
    rows = await session.execute(
        select(
            LlmUsage.member_id,
            func.sum(LlmUsage.input_tokens),
            func.sum(LlmUsage.output_tokens),
            func.sum(LlmUsage.cache_read_tokens),
            func.sum(LlmUsage.cache_write_tokens),
        ).group_by(LlmUsage.member_id)
    )
    return {
        member: {"input": int(i or 0), "output": int(o or 0), "cache_read": int(r or 0), "cache_write": int(w or 0)}
        for member, i, o, r, w in rows.all()
    }


async def totals_by_workflow(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Tokens of workflow agent steps, per workflow name (turns are not in here)."""
    rows = await session.execute(
        select(
            LlmUsage.workflow,
            func.sum(LlmUsage.input_tokens),
            func.sum(LlmUsage.output_tokens),
            func.sum(LlmUsage.cache_read_tokens),
            func.sum(LlmUsage.cache_write_tokens),
            func.count(func.distinct(LlmUsage.run_id)),
        )
        .where(LlmUsage.workflow.is_not(None))
        .group_by(LlmUsage.workflow)
    )
    return {
        str(name): {"input": int(i or 0), "output": int(o or 0), "cache_read": int(r or 0), "cache_write": int(w or 0),
                    "runs": int(n or 0)}
        for name, i, o, r, w, n in rows.all()
    }


async def spent_since(session: AsyncSession, since: datetime, *, member_id: str | None = None,
                      user_ids: list[str] | None = None) -> tuple[int, float]:
    """(tokens, cost) of the LLM calls made since `since`, of one member and/or by some people
    (their platform user ids); every billed token counts: input, output, cache reads and writes."""
    query = select(func.sum(LlmUsage.input_tokens + LlmUsage.output_tokens + LlmUsage.cache_read_tokens
                            + LlmUsage.cache_write_tokens), func.sum(LlmUsage.cost)).where(LlmUsage.created_at >= since)
    if member_id is not None:
        query = query.where(LlmUsage.member_id == member_id)
    if user_ids is not None:
        query = query.where(LlmUsage.user_id.in_(user_ids))
    tokens, cost = (await session.execute(query)).one()
    return int(tokens or 0), float(cost or 0.0)


async def spent_by_member_since(session: AsyncSession, since: datetime) -> dict[str, tuple[int, float]]:
    """member -> (tokens, cost) since `since`, for the members that made any call."""
    rows = await session.execute(
        select(LlmUsage.member_id, func.sum(LlmUsage.input_tokens + LlmUsage.output_tokens + LlmUsage.cache_read_tokens
                                            + LlmUsage.cache_write_tokens), func.sum(LlmUsage.cost))
        .where(LlmUsage.created_at >= since).group_by(LlmUsage.member_id)
    )
    return {str(m): (int(t or 0), float(c or 0.0)) for m, t, c in rows.all()}
