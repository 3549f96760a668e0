"""Where each budget stands this period: its limit, what is used, what calls in flight hold,
what is left, and when it resets. What `teammates usage`, `teammates status` and `/metrics`
show; read from the same tables the budget check reserves in, so they agree with it.

`person:default` is a limit per person: besides its own line (nobody's use), every person who
used it this period gets a line of their own (`via` names the default)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jobs.spend import periods
from storage import budgets
from storage.budgets import Limit

DEFAULT_PERSON = "person:default"


@dataclass(frozen=True)
class Balance:
    scope: str
    metric: str  # tokens | cost | effects
    limit: float
    used: float
    reserved: float  # held by calls in flight (tokens and cost only)
    period: str  # day | month
    period_key: str  # 2026-12-02 | 2026-12
    resets_at: datetime  # the workspace's wall time when the next period starts
    set_by: str | None  # None: from the config file
    via: str | None = None  # the limit this ledger follows when it is not its own (person:default)

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.used - self.reserved)

    def as_dict(self) -> dict[str, Any]:
        def number(value: float) -> float | int:
            return round(value, 6) if self.metric == "cost" else int(value)

        return {"scope": self.scope, "metric": self.metric, "limit": number(self.limit), "used": number(self.used),
                "reserved": number(self.reserved), "left": number(self.left), "period": self.period,
                "period_key": self.period_key, "resets_at": self.resets_at.isoformat(), "set_by": self.set_by, "via": self.via}


async def current(session: AsyncSession, zone: str, now: datetime | None = None) -> list[Balance]:
    """Every budget's standing in its current period, by scope (a few small queries, whatever
    the number of calls)."""
    now = now or datetime.now(UTC)
    found = await budgets.limits(session)
    keys = {scope: periods.key(limit.period, zone, now) for scope, limit in found.items()}
    rows = await budgets.use(session, list(keys.items()))
    out = [_balance(limit, rows[(scope, keys[scope])], zone, now) for scope, limit in found.items()]
    default = found.get(DEFAULT_PERSON)
    if default is not None:
        for row in await budgets.ledgers_in(session, "person:", keys[DEFAULT_PERSON]):
            if row.scope not in found:
                follows = Limit(row.scope, default.metric, default.amount, default.period, default.set_by)
                out.append(_balance(follows, row, zone, now, via=DEFAULT_PERSON))
    return sorted(out, key=lambda b: (_order(b.scope), b.scope))


def _balance(limit: Limit, row: budgets.Use, zone: str, now: datetime, via: str | None = None) -> Balance:
    return Balance(limit.scope, limit.metric, limit.amount, row.used(limit.metric), row.reserved(limit.metric), limit.period,
                   row.period, periods.resets_at(limit.period, zone, now), limit.set_by, via)


def _order(scope: str) -> int:
    return {"workspace": 0, "member": 1, "effects": 2, "person": 3}.get(scope.partition(":")[0], 4)


def for_member(balances: list[Balance], member_id: str) -> list[Balance]:
    """The budgets that bound `member_id`'s calls and effects: the workspace's and its own."""
    return [b for b in balances if b.scope in ("workspace", f"member:{member_id}", f"effects:{member_id}")]


def llm_left(balances: list[Balance], member_id: str) -> dict[str, float] | None:
    """What `member_id` may still spend on the LLM this period, per metric: the least left of
    the workspace's and its own budget (None: no budget bounds it)."""
    out: dict[str, float] = {}
    for b in for_member(balances, member_id):
        if b.metric in ("tokens", "cost"):
            out[b.metric] = min(out.get(b.metric, b.left), b.left)
    return out or None
