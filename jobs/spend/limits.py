"""Which budgets bound a call, from the file's `budgets:` and the admins' changes.

Scopes: `workspace`, `member:ID`, `person:ID` (a person id from `people:`, else the platform
user id; `person:default` is everyone's unless they have their own), and `effects:ID` for a
member's cap on external effects per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobs.spend import periods
from storage.budgets import Claim, Limit
from teammates.config import Budget, Config


@dataclass(frozen=True)
class Payer:
    """Who a call is charged to. A conversation turn has a `person`; a workflow's agent step
    has a `workflow` (its runs are charged to the member and the workspace, not to a person)."""

    member_id: str
    run_id: str
    person: str | None = None  # the ledger's name for the person: their person id, else user id
    user_id: str | None = None  # the platform user id (recorded with the usage)
    conversation_id: int | None = None
    workflow: str | None = None


def from_file(config: Config) -> dict[str, Limit]:
    """The limits the config file sets, by scope."""
    out: dict[str, Limit] = {}
    budgets = config.budgets

    def add(scope: str, budget: Budget) -> None:
        metric, amount = ("tokens", float(budget.tokens)) if budget.tokens is not None else ("cost", float(budget.cost or 0))
        out[scope] = Limit(scope, metric, amount, budget.period)

    if budgets.workspace is not None:
        add("workspace", budgets.workspace)
    for member, budget in budgets.members.items():
        add(f"member:{member}", budget)
    for person, budget in budgets.people.items():
        add(f"person:{person}", budget)
    for m in config.members:
        if m.limits.effects_per_day is not None:
            out[f"effects:{m.id}"] = Limit(f"effects:{m.id}", "effects", float(m.limits.effects_per_day), "day")
    return out


def claims(limits: dict[str, Limit], payer: Payer, zone: str, now: datetime | None = None) -> list[Claim]:
    """The ledgers a call by `payer` reserves in (none: nothing bounds it)."""
    found = [limits.get("workspace"), limits.get(f"member:{payer.member_id}")]
    if payer.person is not None:
        own = limits.get(f"person:{payer.person}") or (limits.get(f"person:{payer.user_id}") if payer.user_id else None)
        default = limits.get("person:default")
        chosen = own or default
        if chosen is not None:  # the default is a limit per person: each has their own ledger
            found.append(Limit(f"person:{payer.person}", chosen.metric, chosen.amount, chosen.period, chosen.set_by))
    return [Claim(limit, periods.key(limit.period, zone, now)) for limit in found if limit is not None]
