"""An admin changing a budget: which scope, which measure, checked, stored, and in the feed.

Running processes read the `budgets` table at every call, so a change holds from the next
call on, without a restart. A change from here wins over the config file until the file's own
value for that scope changes (see `storage.budgets.seed`)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from jobs.people import People
from jobs.spend import notices
from storage import activity, budgets
from storage.budgets import Limit
from teammates.config import Config

log = logging.getLogger(__name__)

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


class BadChange(ValueError):
    """The change is not valid; the message is one line for the person who asked."""


@dataclass(frozen=True)
class Change:
    limit: Limit
    before: Limit | None

    @property
    def member_id(self) -> str | None:
        kind, _, who = self.limit.scope.partition(":")
        return who if kind in ("member", "effects") else None


def scope_of(config: Config, given: str, metric: str) -> str:
    """The stored scope for what an admin typed: `workspace`, `member:ID`, `person:ID` (a person
    id, a Slack user id, or `default`); with the `effects` metric, `member:ID` (or
    `effects:ID`) becomes `effects:ID`. A Slack user id of someone in `people:` is stored under
    their person id, the name their ledger has."""
    kind, sep, who = given.partition(":")
    members = [m.id for m in config.members]
    if metric == "effects":
        if kind not in ("member", "effects") or not sep:
            raise BadChange(f"{given}: --effects is a member's daily cap: expected member:ID")
        kind = "member"
    if given == "workspace":
        return "workspace"
    if kind == "member" and sep:
        if who not in members:
            raise BadChange(f"{given}: no member {who!r} (members: {', '.join(members) or 'none configured'})")
        return f"effects:{who}" if metric == "effects" else f"member:{who}"
    if kind == "person" and sep:
        if who == "default" or any(p.id == who for p in config.people):
            return f"person:{who}"
        if _SLACK_USER.match(who):
            return f"person:{People.from_config(config).person_of(who) or who}"
        raise BadChange(f"{given}: no person {who!r} (expected a person id from people:, a Slack user id, or default)")
    raise BadChange(f"{given}: expected workspace, member:ID or person:ID")


def limit_of(config: Config, given: str, *, tokens: int | None, cost: float | None, effects: int | None,
             period: str | None, current: dict[str, Limit], set_by: str) -> Limit:
    """The new limit, checked: exactly one measure, not negative, a period of day or month
    (default: the scope's current one); effects are counted per day."""
    measures = [(m, v) for m, v in (("tokens", tokens), ("cost", cost), ("effects", effects)) if v is not None]
    if len(measures) != 1:
        raise BadChange("expected exactly one of --tokens N, --cost X or --effects N")
    metric, value = measures[0]
    amount = float(value)  # type: ignore[arg-type]
    if not math.isfinite(amount) or amount < 0:
        raise BadChange(f"--{metric}: expected a number of at least 0, got {value}")
    scope = scope_of(config, given, metric)
    if metric == "effects":
        if period not in (None, "day"):
            raise BadChange("--effects: a member's effects are capped per day (--period day)")
        period = "day"
    elif period is None:
        existing = current.get(scope)
        if existing is None:
            raise BadChange(f"{scope}: --period day or --period month is needed for a new budget")
        period = existing.period
    return Limit(scope, metric, amount, period, set_by)


async def apply(session: AsyncSession, config: Config, limit: Limit, actor: str | None) -> Change:
    """Store `limit` and add a `budget.set` row to the activity feed (same transaction)."""
    before = await budgets.set_limit(session, limit)
    change = Change(limit, before)
    currency = config.workspace.currency
    was = "none" if before is None else words(before, currency)
    await activity.record(session, member_id=change.member_id, actor_type="person" if actor else "system", actor_id=actor or "cli",
                          action="budget.set", description=f"Budget {limit.scope} set to {words(limit, currency)} (was {was})",
                          entity_type="budget", entity_id=limit.scope,
                          details={"before": None if before is None else budgets.describe(before), "after": budgets.describe(limit)})
    log.info("budget %s set to %s (was %s) by %s", limit.scope, words(limit, currency), was, actor or "cli",
             extra={"member": change.member_id})
    return change


def words(limit: Limit, currency: str) -> str:
    """'200,000 tokens per day' / '150.00 EUR per month' / '50 external actions per day'."""
    return f"{notices.amount(limit, limit.amount, currency)} per {limit.period}"
