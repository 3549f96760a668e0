"""Budgets and their ledger: limits per scope, and use per scope and period.

Invariants:
- A budget's row is seeded from the config file; an admin's change (`set`) wins until the
  file's own value for that scope changes (`file_value` remembers what the file said).
- The ledger (`budget_use`) changes only through single guarded UPDATEs: `reserve` adds a
  call's worst case to `reserved_*` only where settled use + reservations + it still fit the
  limit. Under PostgreSQL the row lock re-checks the WHERE after a concurrent writer commits;
  SQLite has one writer at a time. The scopes of one call are taken in a fixed order, in one
  transaction, so two calls never wait on each other's rows (no deadlock), and a call that
  does not fit anywhere reserves nowhere (the caller's transaction rolls back).
- `settle` moves a reservation to real use exactly once (it deletes the reservation row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Budget, BudgetReservation, BudgetUse, EffectSlot, utcnow

METRICS = ("tokens", "cost", "effects")


@dataclass(frozen=True)
class Limit:
    scope: str
    metric: str  # tokens | cost | effects
    amount: float
    period: str  # day | month
    set_by: str | None = None


@dataclass(frozen=True)
class Claim:
    """One ledger a call reserves in: its scope's limit in its current period."""

    limit: Limit
    period: str  # the period key: 2026-12-02 or 2026-12


@dataclass(frozen=True)
class Use:
    scope: str
    period: str
    tokens: int
    cost: float
    reserved_tokens: int
    reserved_cost: float
    count: int
    warned: bool

    def used(self, metric: str) -> float:
        return {"tokens": self.tokens, "cost": self.cost, "effects": self.count}[metric]

    def reserved(self, metric: str) -> float:
        return {"tokens": self.reserved_tokens, "cost": self.reserved_cost, "effects": 0}[metric]


class DoesNotFit(Exception):
    """The reservation did not fit `claim`'s limit (the transaction must roll back)."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(claim.limit.scope)
        self.claim = claim


async def seed(session: AsyncSession, from_file: dict[str, Limit]) -> None:
    """Bring the file's budgets in. A scope the file names is (re)written when it is new or the
    file's value for it changed since the last seed; one the file no longer names goes, unless
    only an admin ever set it."""
    rows = {row.scope: row for row in (await session.scalars(select(Budget))).all()}
    for scope, limit in from_file.items():
        value = {"metric": limit.metric, "amount": limit.amount, "period": limit.period}
        row = rows.get(scope)
        if row is None:
            session.add(Budget(scope=scope, metric=limit.metric, amount=limit.amount, period=limit.period, file_value=value))
        elif row.file_value != value:
            row.metric, row.amount, row.period, row.file_value, row.set_by = limit.metric, limit.amount, limit.period, value, None
    for scope, row in rows.items():
        if scope not in from_file and row.file_value is not None:
            await session.delete(row)
    await session.flush()


async def set_limit(session: AsyncSession, limit: Limit) -> Limit | None:
    """Set (or raise, or lower) a scope's limit as an admin; the previous one, if any."""
    row = await session.get(Budget, limit.scope)
    before = None if row is None else Limit(row.scope, row.metric, row.amount, row.period, row.set_by)
    if row is None:
        session.add(Budget(scope=limit.scope, metric=limit.metric, amount=limit.amount, period=limit.period, set_by=limit.set_by))
    else:
        row.metric, row.amount, row.period, row.set_by = limit.metric, limit.amount, limit.period, limit.set_by
    await session.flush()
    return before


async def limits(session: AsyncSession) -> dict[str, Limit]:
    rows = (await session.scalars(select(Budget))).all()
    return {r.scope: Limit(r.scope, r.metric, r.amount, r.period, r.set_by) for r in rows}


async def use(session: AsyncSession, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Use]:
    """The ledger rows of these (scope, period) keys; a missing one is unused."""
    if not keys:
        return {}
    scopes = sorted({s for s, _ in keys})
    rows = (await session.scalars(select(BudgetUse).where(BudgetUse.scope.in_(scopes)))).all()
    found = {(r.scope, r.period): _use(r) for r in rows}
    return {k: found.get(k, Use(k[0], k[1], 0, 0.0, 0, 0.0, 0, False)) for k in keys}


async def reserve(session: AsyncSession, reservation_id: str, claims: list[Claim], tokens: int, cost: float,
                  expires_at: datetime) -> None:
    """Reserve `tokens` / `cost` in every claim's ledger, or raise DoesNotFit naming the first
    that has no room (the caller's transaction must then roll back: nothing stays reserved)."""
    for claim in sorted(claims, key=lambda c: (c.limit.scope, c.period)):
        await insert_or_ignore(session, BudgetUse, {"scope": claim.limit.scope, "period": claim.period})
        row = BudgetUse
        room = {
            "tokens": row.tokens + row.reserved_tokens + tokens <= claim.limit.amount,
            "cost": row.cost + row.reserved_cost + cost <= claim.limit.amount,
        }[claim.limit.metric]
        result = await session.execute(
            update(BudgetUse)
            .where(BudgetUse.scope == claim.limit.scope, BudgetUse.period == claim.period, room)
            .values(reserved_tokens=BudgetUse.reserved_tokens + tokens, reserved_cost=BudgetUse.reserved_cost + cost)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise DoesNotFit(claim)
    session.add(BudgetReservation(id=reservation_id, claims=[[c.limit.scope, c.period] for c in claims], tokens=tokens,
                                  cost=cost, expires_at=expires_at))
    await session.flush()


async def settle(session: AsyncSession, reservation_id: str, claims: list[Claim], tokens: int, cost: float,
                 warn_at: float) -> list[Claim]:
    """Replace the reservation by the call's real use (once: a second settle finds no
    reservation and adds nothing); the claims whose warning this use crossed first."""
    held = (await session.execute(delete(BudgetReservation).where(BudgetReservation.id == reservation_id)
                                  .returning(BudgetReservation.tokens, BudgetReservation.cost))).first()
    if held is None:
        return []
    held_tokens, held_cost = int(held[0]), float(held[1])
    crossed = []
    for claim in sorted(claims, key=lambda c: (c.limit.scope, c.period)):
        await session.execute(
            update(BudgetUse)
            .where(BudgetUse.scope == claim.limit.scope, BudgetUse.period == claim.period)
            .values(reserved_tokens=func.max(BudgetUse.reserved_tokens - held_tokens, 0) if _sqlite(session)
                    else func.greatest(BudgetUse.reserved_tokens - held_tokens, 0),
                    reserved_cost=func.max(BudgetUse.reserved_cost - held_cost, 0.0) if _sqlite(session)
                    else func.greatest(BudgetUse.reserved_cost - held_cost, 0.0),
                    tokens=BudgetUse.tokens + tokens, cost=BudgetUse.cost + cost)
            .execution_options(synchronize_session=False)
        )
        used = BudgetUse.tokens if claim.limit.metric == "tokens" else BudgetUse.cost
        warned = await session.execute(
            update(BudgetUse)
            .where(BudgetUse.scope == claim.limit.scope, BudgetUse.period == claim.period, BudgetUse.warned.is_(False),
                   used >= claim.limit.amount * warn_at)
            .values(warned=True)
            .execution_options(synchronize_session=False)
        )
        if warned.rowcount:  # type: ignore[attr-defined]
            crossed.append(claim)
    return crossed


async def release_expired(session: AsyncSession, now: datetime | None = None) -> int:
    """Release the reservations of calls whose process died before settling them. The call may
    have been made: its worst case is counted as used (a limit is never passed unseen)."""
    rows = (await session.execute(delete(BudgetReservation).where(BudgetReservation.expires_at < (now or utcnow()))
                                  .returning(BudgetReservation.claims, BudgetReservation.tokens, BudgetReservation.cost))).all()
    for claims, tokens, cost in rows:
        for scope, period in claims:
            await session.execute(
                update(BudgetUse)
                .where(BudgetUse.scope == scope, BudgetUse.period == period)
                .values(reserved_tokens=BudgetUse.reserved_tokens - tokens, reserved_cost=BudgetUse.reserved_cost - cost,
                        tokens=BudgetUse.tokens + tokens, cost=BudgetUse.cost + cost)
                .execution_options(synchronize_session=False)
            )
    return len(rows)


async def take_effect_slot(session: AsyncSession, effect_id: str, member_id: str, day: str, cap: int) -> bool:
    """Take one of `member_id`'s `cap` slots of `day` for this effect; True when it has one
    (already, for a retry of the same effect). False: the cap is reached (nothing written)."""
    if not await insert_or_ignore(session, EffectSlot, {"effect_id": effect_id, "member_id": member_id, "day": day}):
        return True
    scope = f"effects:{member_id}"
    await insert_or_ignore(session, BudgetUse, {"scope": scope, "period": day})
    result = await session.execute(
        update(BudgetUse)
        .where(BudgetUse.scope == scope, BudgetUse.period == day, BudgetUse.count < cap)
        .values(count=BudgetUse.count + 1)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        await session.execute(delete(EffectSlot).where(EffectSlot.effect_id == effect_id))
        return False
    return True


def _sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _use(r: BudgetUse) -> Use:
    return Use(r.scope, r.period, int(r.tokens), float(r.cost), int(r.reserved_tokens), float(r.reserved_cost), int(r.count),
               bool(r.warned))


def describe(limit: Limit) -> dict[str, Any]:
    return {"scope": limit.scope, "metric": limit.metric, "amount": limit.amount, "period": limit.period, "set_by": limit.set_by}


async def ledgers_in(session: AsyncSession, prefix: str, period: str) -> list[Use]:
    """The ledger rows of period `period` whose scope starts with `prefix` (e.g. every person's
    of today, for the people under `person:default`)."""
    rows = (await session.scalars(select(BudgetUse).where(BudgetUse.scope.startswith(prefix, autoescape=True),
                                                          BudgetUse.period == period))).all()
    return [_use(r) for r in rows]
