"""What people are told about budgets: the refusal, the warning, and who may raise a limit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from jobs.spend import periods
from storage.budgets import Limit
from teammates.config import Config


def amount(limit: Limit, value: float, currency: str) -> str:
    if limit.metric == "cost":
        return f"{value:,.2f} {currency}"
    if limit.metric == "effects":
        return f"{int(value):,} external actions"
    return f"{int(value):,} tokens"


def budget_name(limit: Limit, config: Config, *, to_person: bool) -> str:
    """'your daily budget' / "Nova's monthly budget" / "the team's monthly budget"."""
    every = "daily" if limit.period == "day" else "monthly"
    kind, _, who = limit.scope.partition(":")
    if kind == "person":
        if to_person:
            return f"your {every} budget"
        return f"{_person_name(config, who)}'s {every} budget"
    if kind == "member":
        return f"{_member_name(config, who)}'s {every} budget"
    return f"the team's {every} budget"


def raisers(config: Config, mention: Callable[[str], str]) -> str:
    from jobs.people import People

    people = People.from_config(config)
    names = [mention(people.user_id(a)) for a in config.admins]
    return ", ".join(names) if names else "an admin"


def refusal(limit: Limit, config: Config, mention: Callable[[str], str], *, to_person: bool, now: datetime | None = None) -> str:
    """The answer instead of a call: which budget, when it resets, who can raise it."""
    zone = config.workspace.timezone
    when = periods.words(periods.resets_at(limit.period, zone, now), now)
    name = budget_name(limit, config, to_person=to_person)
    return (f"I can't do this right now: {name} ({amount(limit, limit.amount, config.workspace.currency)}) is used up. "
            f"It resets {when}. An admin can raise it ({raisers(config, mention)}, with `teammates budget set {limit.scope} …`).")


def warning(limit: Limit, used: float, config: Config, *, to_person: bool, now: datetime | None = None) -> str:
    """Said once per period, when `warn_at` of a budget is used."""
    zone = config.workspace.timezone
    when = periods.words(periods.resets_at(limit.period, zone, now), now)
    share = min(100, int(round(100 * used / limit.amount))) if limit.amount else 100
    currency = config.workspace.currency
    return (f"Heads-up: {budget_name(limit, config, to_person=to_person)} is {share}% used "
            f"({amount(limit, used, currency)} of {amount(limit, limit.amount, currency)}). It resets {when}.")


def _member_name(config: Config, member_id: str) -> str:
    return next((m.name for m in config.members if m.id == member_id), member_id)


def _person_name(config: Config, person: str) -> str:
    return next((p.name for p in config.people if person in (p.id, p.slack, p.teams)), person)
