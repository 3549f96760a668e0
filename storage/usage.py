"""Token usage per LLM call: the basis for quotas, costs and the cache hit rate.

Reports are aggregate queries (SUM ... GROUP BY): their cost grows with the number of groups,
never with the number of calls read back into Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, func, select
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


@dataclass(frozen=True)
class Figures:
    """Tokens and cost of a group of LLM calls. `cost` is the sum of each call's cost at the
    price when it was made (a later price change does not rewrite history)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    calls: int = 0
    runs: int = 0  # distinct run ids (workflow groups only; 0 elsewhere)

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.input + other.input, self.output + other.output, self.cache_read + other.cache_read,
                       self.cache_write + other.cache_write, self.cost + other.cost, self.calls + other.calls,
                       self.runs + other.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "cache_read": self.cache_read, "cache_write": self.cache_write,
                "total": self.total, "cost": round(self.cost, 6), "calls": self.calls}


@dataclass(frozen=True)
class Scope:
    """Which calls a report covers: since a moment, of one member, of some platform users."""

    since: datetime | None = None
    member_id: str | None = None
    user_ids: tuple[str, ...] | None = None  # None: everyone's (and workflow steps', which have none)

    def where(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.since is not None:
            out.append(LlmUsage.created_at >= self.since)
        if self.member_id is not None:
            out.append(LlmUsage.member_id == self.member_id)
        if self.user_ids is not None:
            out.append(LlmUsage.user_id.in_(self.user_ids))
        return out


def _sums() -> list[ColumnElement[Any]]:
    return [func.coalesce(func.sum(LlmUsage.input_tokens), 0), func.coalesce(func.sum(LlmUsage.output_tokens), 0),
            func.coalesce(func.sum(LlmUsage.cache_read_tokens), 0), func.coalesce(func.sum(LlmUsage.cache_write_tokens), 0),
            func.coalesce(func.sum(LlmUsage.cost), 0.0), func.count(LlmUsage.id)]


def _figures(row: Sequence[Any], runs: int = 0) -> Figures:
    i, o, r, w, c, n = row
    return Figures(int(i or 0), int(o or 0), int(r or 0), int(w or 0), float(c or 0.0), int(n or 0), runs)


async def total(session: AsyncSession, scope: Scope = Scope()) -> Figures:
    """All calls in `scope` together (one aggregate query)."""
    row = (await session.execute(select(*_sums()).where(*scope.where()))).one()
    return _figures(tuple(row))


async def by_member(session: AsyncSession, scope: Scope = Scope()) -> dict[str, Figures]:
    """Per member: its conversation turns and its workflows' agent steps together."""
    rows = await session.execute(select(LlmUsage.member_id, *_sums()).where(*scope.where()).group_by(LlmUsage.member_id))
    return {str(r[0]): _figures(tuple(r[1:])) for r in rows.all()}


async def by_user(session: AsyncSession, scope: Scope = Scope()) -> dict[str, Figures]:
    """Per platform user id of the person who asked (conversation turns; workflow agent steps
    have no person and are not in here)."""
    rows = await session.execute(select(LlmUsage.user_id, *_sums()).where(LlmUsage.user_id.is_not(None), *scope.where())
                                 .group_by(LlmUsage.user_id))
    return {str(r[0]): _figures(tuple(r[1:])) for r in rows.all()}


async def by_workflow(session: AsyncSession, scope: Scope = Scope()) -> dict[str, Figures]:
    """Per workflow name: its agent steps, and how many runs made any call."""
    rows = await session.execute(select(LlmUsage.workflow, *_sums(), func.count(func.distinct(LlmUsage.run_id)))
                                 .where(LlmUsage.workflow.is_not(None), *scope.where()).group_by(LlmUsage.workflow))
    return {str(r[0]): _figures(tuple(r[1:7]), int(r[7] or 0)) for r in rows.all()}


async def by_day(session: AsyncSession, zone: str, scope: Scope = Scope()) -> dict[str, Figures]:
    """Per calendar day (`2026-12-02`) of time zone `zone`.

    PostgreSQL groups on the local date itself. SQLite has no time zones: it groups on UTC
    quarter hours (every zone's offset is a whole number of quarter hours), and those few
    groups, not the rows, are put on their local day here."""
    if session.get_bind().dialect.name != "sqlite":
        local = func.to_char(func.timezone(zone, LlmUsage.created_at), "YYYY-MM-DD")
        rows = await session.execute(select(local, *_sums()).where(*scope.where()).group_by(local))
        return {str(r[0]): _figures(tuple(r[1:])) for r in rows.all()}
    hour = func.strftime("%Y-%m-%d %H", LlmUsage.created_at)
    quarter = func.cast(func.strftime("%M", LlmUsage.created_at), Integer) // 15
    rows = await session.execute(select(hour, quarter, *_sums()).where(*scope.where()).group_by(hour, quarter))
    tz = ZoneInfo(zone)
    days: dict[str, Figures] = {}
    for r in rows.all():
        start = datetime.strptime(str(r[0]), "%Y-%m-%d %H").replace(tzinfo=UTC) + timedelta(minutes=15 * int(r[1]))
        day = f"{start.astimezone(tz):%Y-%m-%d}"
        days[day] = days.get(day, Figures()) + _figures(tuple(r[2:]))
    return days
