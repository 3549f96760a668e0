"""The budget check around every LLM call (`agents.turns.Meter`).

Before a call: reserve its worst case (its input, plus `max_tokens`) in every ledger that
bounds it (workspace, member, person), all or none. A cheap upper bound of the input (its
UTF-8 size: a token is never less than a byte) is tried first, so a call far from any limit
costs one UPDATE per ledger and no extra request; near a limit the input is counted with the
API's `count_tokens`. A reservation that does not fit because of calls still in flight waits
for them to settle; one that does not fit the settled use refuses the call (`OverBudget`):
concurrent calls, in any number of processes, never together pass a limit.

After a call: its usage is recorded (priced by `llm.prices`) and the reservation is replaced by
it, in one transaction. A budget whose `warn_at` this use crossed is remembered in `crossed`
for the caller to tell about (the ledger's `warned` flag makes that once per period).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.turns import OverBudget, Usage
from jobs.runtime import Runtime
from jobs.spend import limits, notices, prices
from storage import activity, budgets, effects, usage
from storage.budgets import Claim

log = logging.getLogger(__name__)

WAIT_FOR_IN_FLIGHT = 30.0  # s a call waits for calls in flight to settle before it is refused
_SLACK_TOKENS = 64  # what the API adds around the request's own text (roles, tool framing)


@dataclass
class Ticket:
    id: str
    claims: list[Claim]


@dataclass
class BudgetMeter:
    rt: Runtime
    payer: limits.Payer
    mention: Callable[[str], str] = str
    to_person: bool = True  # a refusal speaks to the person who asked ("your daily budget")
    crossed: list[tuple[Claim, float]] = field(default_factory=list)  # (budget, its use) past warn_at

    async def reserve(self, request: dict[str, Any]) -> Ticket:
        config = self.rt.loaded.config
        now = datetime.now(UTC)
        async with self.rt.db.session() as session:
            found = await budgets.limits(session)
        claims = limits.claims(found, self.payer, config.workspace.timezone, now)
        ticket = Ticket(uuid.uuid4().hex, claims)
        if not claims:
            return ticket
        price = config.llm.price(str(request.get("model")))
        max_tokens = int(request.get("max_tokens") or 0)
        upper = len(json.dumps({k: v for k, v in request.items() if k != "max_tokens"}, ensure_ascii=False).encode()) + _SLACK_TOKENS
        if await self._try(ticket, upper + max_tokens, prices.worst_cost(price, upper, max_tokens)) is None:
            return ticket
        counted = await self._count(request, upper)
        tokens, cost = counted + max_tokens, prices.worst_cost(price, counted, max_tokens)
        deadline = asyncio.get_running_loop().time() + WAIT_FOR_IN_FLIGHT
        while True:
            failed = await self._try(ticket, tokens, cost)
            if failed is None:
                return ticket
            async with self.rt.db.session() as session:
                use = (await budgets.use(session, [(failed.limit.scope, failed.period)]))[(failed.limit.scope, failed.period)]
            need = tokens if failed.limit.metric == "tokens" else cost
            if use.used(failed.limit.metric) + need > failed.limit.amount or asyncio.get_running_loop().time() > deadline:
                await self._refused(failed)
                raise OverBudget(notices.refusal(failed.limit, config, self.mention, to_person=self.to_person, now=now),
                                 failed.limit.scope, failed.period)
            await asyncio.sleep(0.05 + random.random() * 0.1)  # calls in flight settle: then it may fit

    async def settle(self, ticket: Ticket, used: Usage | None) -> None:
        config = self.rt.loaded.config
        tokens = prices.tokens(used) if used is not None else 0
        cost = prices.cost(config.llm.price(used.model), used) if used is not None else 0.0
        payer = self.payer
        async with self.rt.db.session() as session:
            if used is not None:
                await usage.record(session, member_id=payer.member_id, user_id=payer.user_id, conversation_id=payer.conversation_id,
                                   run_id=payer.run_id, workflow=payer.workflow, model=used.model, input_tokens=used.input_tokens,
                                   output_tokens=used.output_tokens, cache_read_tokens=used.cache_read_tokens,
                                   cache_write_tokens=used.cache_write_tokens, cost=cost)
            crossed = []
            if ticket.claims:
                crossed = await budgets.settle(session, ticket.id, ticket.claims, tokens, cost, config.budgets.warn_at)
            if crossed:
                rows = await budgets.use(session, [(c.limit.scope, c.period) for c in crossed])
                self.crossed += [(c, rows[(c.limit.scope, c.period)].used(c.limit.metric)) for c in crossed]

    async def _refused(self, claim: Claim) -> None:
        """Logged every time; in the activity feed once per budget and period."""
        config, payer = self.rt.loaded.config, self.payer
        log.info("LLM call refused: budget %s (%s) has no room", claim.limit.scope, claim.period,
                 extra={"run_id": payer.run_id, "member": payer.member_id, "workflow": payer.workflow or "-"})
        async with self.rt.db.session() as session:
            _, first = await effects.begin_with(session, f"budget-exhausted-{claim.limit.scope}-{claim.period}"[:200], "notice",
                                                {"scope": claim.limit.scope, "period": claim.period})
            if first:
                name = notices.budget_name(claim.limit, config, to_person=False)
                await activity.record(session, member_id=payer.member_id, actor_type="system", actor_id="budget",
                                      action="budget_exhausted",
                                      description=f"{name} ({notices.amount(claim.limit, claim.limit.amount, config.workspace.currency)}) "
                                                  "is used up: calls it bounds are refused until it resets or an admin raises it",
                                      entity_type="budget", entity_id=claim.limit.scope, run_id=payer.run_id,
                                      details={"scope": claim.limit.scope, "period": claim.period})

    async def _try(self, ticket: Ticket, tokens: int, cost: float) -> Claim | None:
        """Reserve in every ledger or in none; the claim that had no room, if any."""
        llm = self.rt.loaded.config.llm
        expires = datetime.now(UTC) + timedelta(seconds=llm.timeout * (llm.max_retries + 1) + 60)
        try:
            async with self.rt.db.session() as session:
                await budgets.reserve(session, ticket.id, ticket.claims, tokens, cost, expires)
        except budgets.DoesNotFit as exc:
            return exc.claim
        return None

    async def _count(self, request: dict[str, Any], upper: int) -> int:
        """The request's input tokens as the API counts them; the upper bound if it cannot."""
        try:
            counted = await self.rt.llm.messages.count_tokens(**{k: v for k, v in request.items() if k != "max_tokens"})
            return int(counted.input_tokens)
        except Exception as exc:  # noqa: BLE001 - an upper bound is always safe
            log.info("count_tokens failed (%s); reserving the upper bound", type(exc).__name__)
            return upper
