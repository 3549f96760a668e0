"""Keeping the budgets' ledger right over time: the file's budgets seeded at start, the
reservations of processes that died released, and whether a member can still call the LLM."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from jobs.spend import limits, notices
from storage import budgets
from storage.db import Database
from teammates.config import Config

log = logging.getLogger(__name__)


async def seed(session: AsyncSession, config: Config) -> None:
    await budgets.seed(session, limits.from_file(config))


async def release_expired(db: Database, now: datetime | None = None) -> int:
    async with db.session() as session:
        released = await budgets.release_expired(session, now)
    if released:
        log.warning("released %d budget reservation(s) of calls whose process died (their worst case counts as used)", released)
    return released


async def out_of_budget(session: AsyncSession, config: Config, member_id: str, now: datetime | None = None) -> str | None:
    """Why `member_id` cannot make an LLM call now (its own or the workspace's budget has no
    room for one call of `max_tokens`), or None. For runs that would need the LLM."""
    found = await budgets.limits(session)
    claims = limits.claims(found, limits.Payer(member_id, "-"), config.workspace.timezone, now)
    rows = await budgets.use(session, [(c.limit.scope, c.period) for c in claims])
    for claim in claims:
        row = rows[(claim.limit.scope, claim.period)]
        need = config.llm.max_tokens if claim.limit.metric == "tokens" else 0.0
        if row.used(claim.limit.metric) + need > claim.limit.amount or row.used(claim.limit.metric) >= claim.limit.amount:
            return (f"{notices.budget_name(claim.limit, config, to_person=False)} "
                    f"({notices.amount(claim.limit, claim.limit.amount, config.workspace.currency)}) is used up")
    return None
