"""Telling people about budgets, once: warnings at `warn_at`, and a workflow stopped by one.

Each message is an effect keyed by the budget, its period and the person, so however many
calls cross a limit (in any number of processes), each person hears it once per period."""

from __future__ import annotations

import logging

from jobs.people import People
from jobs.runtime import Runtime
from jobs.spend import notices
from storage import effects
from storage.budgets import Claim

log = logging.getLogger(__name__)


async def once(rt: Runtime, member_id: str, platform: str, users: list[str], key: str, text: str) -> None:
    """DM `text` to each of `users` (platform user ids) as `member_id`, once per `key`."""
    try:
        channel = rt.channels(platform, member_id)
    except LookupError:
        return
    people = People.from_config(rt.loaded.config)
    for user in dict.fromkeys(people.user_id(u, platform) for u in users):
        effect_id = f"budget-{key}-{user}"[:200]
        async with rt.db.session() as session:
            row = await effects.begin(session, effect_id, "notice")
        if row.status == "done":
            continue
        try:
            told = await channel.notify(user, text, effect_id=effect_id)
        except Exception as exc:  # noqa: BLE001 - a notice never fails what it is about
            log.warning("could not tell %s about a budget: %s", user, exc, extra={"member": member_id})
            continue
        async with rt.db.session() as session:
            await effects.finish(session, effect_id, {"ts": told.message})


def admins(rt: Runtime, platform: str = "slack") -> list[str]:
    people = People.from_config(rt.loaded.config)
    return [people.user_id(a, platform) for a in rt.loaded.config.admins]


async def warn_admins(rt: Runtime, member_id: str, platform: str, crossed: list[tuple[Claim, float]]) -> None:
    """The warnings of team-wide budgets (workspace, member) go to the admins."""
    config = rt.loaded.config
    for claim, used in crossed:
        if claim.limit.scope.startswith("person:"):
            continue
        text = notices.warning(claim.limit, used, config, to_person=False)
        await once(rt, member_id, platform, admins(rt, platform), f"warn-{claim.limit.scope}-{claim.period}", text)


def person_warnings(crossed: list[tuple[Claim, float]], rt: Runtime) -> str:
    """The person's own warning, to append to the answer it came with."""
    lines = [notices.warning(c.limit, used, rt.loaded.config, to_person=True) for c, used in crossed if c.limit.scope.startswith("person:")]
    return "\n\n".join(f"_{line}_" for line in lines)
