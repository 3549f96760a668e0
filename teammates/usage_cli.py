"""`teammates usage` and `teammates budget set|list`: what the LLM cost, per member, person,
workflow and day, and where each budget stands. Thin: the figures come from aggregate queries
in `storage.usage`, the budgets' standing from `jobs.spend.balances`, a change goes through
`jobs.spend.changes`. A user error is a `ConfigError` (one line on stderr, exit 2)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jobs.people import People
from jobs.spend import balances, changes
from storage import budgets, usage
from storage.db import Database
from storage.usage import Figures, Scope
from teammates.config import Config, ConfigError, LoadedConfig
from teammates.runtime import opened
from teammates.workflows_cli import person as as_person_arg

Say = Callable[[str], None]
log = logging.getLogger(__name__)

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
COLUMNS = ("calls", "input", "output", "cache_read", "cache_write", "total", "cost")


async def report(loaded: LoadedConfig, say: Say, *, member: str | None = None, person: str | None = None,
                 since: str | None = None, as_json: bool = False) -> None:
    config = loaded.config
    zone = config.workspace.timezone
    scope = Scope(since=_since(since, zone), member_id=_member(config, member), user_ids=_user_ids(config, person))
    async with opened(loaded) as db, db.session() as session:
        total = await usage.total(session, scope)
        members = await usage.by_member(session, scope)
        users = await usage.by_user(session, scope)
        workflows = await usage.by_workflow(session, scope)
        days = await usage.by_day(session, zone, scope)
        standing = await balances.current(session, zone)
    people = _by_person(config, users)
    standing = _relevant(standing, member, scope.user_ids, config)
    doc: dict[str, Any] = {
        "since": scope.since.astimezone(ZoneInfo(zone)).isoformat() if scope.since else None,
        "member": member,
        "person": person,
        "currency": config.workspace.currency,
        "timezone": zone,
        "total": total.as_dict(),
        "members": [{"member": k, **v.as_dict()} for k, v in sorted(members.items())],
        "people": [{"person": k, "user_ids": ids, **v.as_dict()} for k, (ids, v) in sorted(people.items())],
        "workflows": [{"workflow": k, "runs": v.runs, **v.as_dict()} for k, v in sorted(workflows.items())],
        "days": [{"day": k, **v.as_dict()} for k, v in sorted(days.items())],
        "budgets": [b.as_dict() for b in standing],
    }
    if as_json:
        say(json.dumps(doc, indent=2))
        return
    currency = config.workspace.currency
    head = f"LLM usage since {doc['since']}" if doc["since"] else "LLM usage, all time"
    say(head + (f", member {member}" if member else "") + (f", person {person}" if person else "") + f" (cost in {currency})")
    # Members and days each cover every call: their tables end with the total. People and
    # workflows do not (a workflow step has no person; a turn no workflow).
    for key, rows, whole in (("member", doc["members"], True), ("person", doc["people"], False),
                             ("workflow", doc["workflows"], False), ("day", doc["days"], True)):
        say("")
        if not rows:
            say(f"{key.upper()}: none")
            continue
        total_row = [["(all)", *(_cell(c, doc["total"][c]) for c in COLUMNS)]] if whole else []
        _table(say, [key.upper(), *(c.upper().replace("_", " ") for c in COLUMNS)],
               [[r[key], *(_cell(c, r[c]) for c in COLUMNS)] for r in rows] + total_row)
    say("")
    budget_table(say, standing, currency)


async def budget_set(loaded: LoadedConfig, say: Say, scope: str, *, tokens: int | None, cost: float | None,
                     effects: int | None, period: str | None, as_person: str | None) -> None:
    config = loaded.config
    actor = as_person_arg(loaded, as_person)
    async with opened(loaded) as db:
        async with db.session() as session:
            current = await budgets.limits(session)
            try:
                limit = changes.limit_of(config, scope, tokens=tokens, cost=cost, effects=effects, period=period,
                                         current=current, set_by=actor or "cli")
            except changes.BadChange as exc:
                raise ConfigError(f"budget set: {exc}") from None
            change = await changes.apply(session, config, limit, actor)
        woken = await _wake_held(db, config, change.member_id) if limit.metric == "effects" and change.member_id else 0
    currency = config.workspace.currency
    was = "none" if change.before is None else changes.words(change.before, currency)
    released = f"; {woken} held step(s) released" if woken else ""
    say(f"budget {limit.scope}: {changes.words(limit, currency)} (was {was}){released}")


async def budget_list(loaded: LoadedConfig, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db, db.session() as session:
        standing = await balances.current(session, loaded.config.workspace.timezone)
    if as_json:
        say(json.dumps([b.as_dict() for b in standing], indent=2))
        return
    budget_table(say, standing, loaded.config.workspace.currency)


def budget_table(say: Say, standing: Sequence[balances.Balance], currency: str) -> None:
    if not standing:
        say("no budgets (set one with `teammates budget set` or under budgets: in the config)")
        return
    rows = []
    for b in standing:
        def fig(value: float, metric: str = b.metric) -> str:
            return f"{value:,.2f} {currency}" if metric == "cost" else f"{int(value):,}"

        rows.append([b.scope + (f" ({b.via})" if b.via else ""), b.metric, fig(b.limit), fig(b.used), fig(b.reserved), fig(b.left),
                     b.period_key, f"{b.resets_at:%Y-%m-%d %H:%M %Z}", b.set_by or "config"])
    _table(say, ["BUDGET", "METRIC", "LIMIT", "USED", "IN FLIGHT", "LEFT", "PERIOD", "RESETS", "SET BY"], rows)


async def _wake_held(db: Database, config: Config, member_id: str) -> int:
    """Effects held back by a member's daily cap may go now that the cap changed; how many woke."""
    from jobs.queues import redis_from_url
    from jobs.spend.caps import wake_held

    redis = redis_from_url(config.redis_url)
    try:
        return await wake_held(db, redis, member_id)
    finally:
        redis.close()


def _since(value: str | None, zone: str) -> datetime | None:
    """`--since`: a date (midnight of the workspace's time zone) or an ISO 8601 moment."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since: expected a date (YYYY-MM-DD) or an ISO 8601 time, got {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).astimezone(UTC)


def _member(config: Config, member: str | None) -> str | None:
    if member is not None and all(m.id != member for m in config.members):
        known = ", ".join(m.id for m in config.members) or "none configured"
        raise ConfigError(f"--member: no member {member!r} (members: {known})")
    return member


def _user_ids(config: Config, person: str | None) -> tuple[str, ...] | None:
    """The platform user ids of `--person` (a person id from `people:` or a platform user id)."""
    if person is None:
        return None
    people = People.from_config(config)
    known = people.person_of(person) or people.person_of(person, "teams") or (person if person in people.accounts else None)
    if known is None:
        _check_user_id(person)
        return (person,)
    return tuple(dict.fromkeys([person, *people.accounts[known].values()]))


def _check_user_id(value: str) -> None:
    if not _SLACK_USER.match(value):
        raise ConfigError(f"--person: unknown person {value!r} (expected a person id from people: or a Slack user id)")


def _by_person(config: Config, users: dict[str, Figures]) -> dict[str, tuple[list[str], Figures]]:
    """Per person id when `people:` knows the user (their accounts merged), else per user id."""
    people = People.from_config(config)
    out: dict[str, tuple[list[str], Figures]] = {}
    for user_id, figures in users.items():
        name = people.person_of(user_id) or people.person_of(user_id, "teams") or user_id
        ids, before = out.get(name, ([], Figures()))
        out[name] = (sorted([*ids, user_id]), before + figures)
    return out


def _relevant(standing: list[balances.Balance], member: str | None, user_ids: tuple[str, ...] | None,
              config: Config) -> list[balances.Balance]:
    """With --member or --person, the budgets that bound them (and the workspace's)."""
    if member is None and user_ids is None:
        return standing
    people = People.from_config(config)
    names = set() if user_ids is None else {f"person:{people.person_of(u) or u}" for u in user_ids} | {"person:default"}
    own = {f"member:{member}", f"effects:{member}"} if member else set()
    return [b for b in standing if b.scope == "workspace" or b.scope in own or b.scope in names]


def _cell(column: str, value: Any) -> str:
    return f"{value:,.4f}" if column == "cost" else f"{value:,}"


def _table(say: Say, header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the first left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
