"""Pausing a member: an admin stops it answering and its workflows firing, until resumed.

Invariants a reader must not break:
- Only an admin pauses or resumes (`may_administer`: `admins:`, and Slack's workspace admins
  and owners with `slack.admins_from_workspace`); the rule is checked here, never in an adapter.
- A paused member never calls the LLM for a message: the turn answers with `sentence` instead
  (`jobs.turns`). Its scheduled slots are recorded as skipped with the reason
  (`jobs.schedules`), a manual run is refused (`MemberPaused`), a webhook gets 409, and event
  triggers pass over its workflows. Resuming restores all of it; the schedules' next slots
  were kept queued all along, so nothing needs re-creating.
- Pause and resume are single guarded UPDATEs (`storage.members`): of two admins at once one
  changes it and the other is told it was done already. Each change is in the activity feed,
  its actor the person.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from agents.channels import Channel
from jobs.people import People
from jobs.runtime import Runtime
from storage import activity, members
from storage.models import Member, utcnow
from teammates.config import Config

log = logging.getLogger(__name__)


class MemberPaused(Exception):
    """A run of a paused member's workflow was asked for: refused, saying so (one line)."""


@dataclass(frozen=True)
class Paused:
    member_id: str
    name: str
    by: str | None  # a person id, else a platform user id
    since: datetime | None


async def paused(session: AsyncSession, member_id: str) -> Paused | None:
    """The member's pause, or None when it is active (or unknown)."""
    row = await session.get(Member, member_id, populate_existing=True)
    if row is None or row.status != "paused":
        return None
    return Paused(row.id, row.name, row.paused_by, row.paused_at)


def command_of(config: Config | None, member_id: str) -> str:
    for member in config.members if config is not None else []:
        if member.id == member_id:
            return member.command
    return f"/{member_id}"


def sentence(pause: Paused, config: Config | None, mention: Callable[[str], str] | None = None, platform: str = "slack") -> str:
    """"Nova is paused (by @ana since 2 Dec 14:02); an admin can resume it with /nova resume".
    Without the config (the web process's catch-up) times are UTC and the command `/<id>`."""
    by = ""
    if pause.by:
        user = People.from_config(config).user_id(pause.by, platform) if config is not None else pause.by
        by = f"by {mention(user) if mention is not None else pause.by}"
    zone = config.workspace.timezone if config is not None else "UTC"
    since = f"since {_local(pause.since, zone)}" if pause.since else ""
    detail = " ".join(part for part in (by, since) if part)
    return (f"{pause.name} is paused" + (f" ({detail})" if detail else "")
            + f"; an admin can resume it with {command_of(config, pause.member_id)} resume")


async def refusal(session: AsyncSession, config: Config | None, member_id: str) -> str | None:
    """Why a run of `member_id`'s workflow may not start now (its pause in words), or None."""
    pause = await paused(session, member_id)
    return sentence(pause, config) if pause is not None else None


async def answer_if_paused(rt: Runtime, member_id: str, channel: Channel) -> str | None:
    """What a paused member answers to a message (no LLM call), or None when it is active."""
    async with rt.db.session() as session:
        pause = await paused(session, member_id)
    if pause is None:
        return None
    log.info("member paused: answered without the LLM", extra={"member": member_id})
    return sentence(pause, rt.loaded.config, channel.mention, channel.platform)


async def set_paused(rt: Runtime, member_id: str, user_id: str, platform: str, channel: Channel | None, *, pause: bool) -> str:
    """Pause (or resume) the member as the person `user_id`; the sentence that tells them
    what happened (or why nothing did)."""
    config = rt.loaded.config
    people = People.from_config(config)
    if not await people.may_administer(user_id, platform, channel):
        return f"Only an admin can {'pause' if pause else 'resume'} a member."
    person = people.person_of(user_id, platform) or user_id
    async with rt.db.session() as session:
        profile = await members.profile(session, member_id)
        if profile is None:
            return f"There is no member {member_id!r}."
        changed = await (members.pause(session, member_id, person) if pause else members.resume(session, member_id))
        if changed:
            await activity.record(session, member_id=member_id, actor_type="person", actor_id=person,
                                  action="member_paused" if pause else "member_resumed",
                                  description=f"{person} {'paused' if pause else 'resumed'} {profile.name}",
                                  entity_type="member", entity_id=member_id)
        now = await paused(session, member_id)
    log.info("member %s by %s", "paused" if pause else "resumed", person, extra={"member": member_id})
    if pause:
        if not changed and now is not None:
            return f"Already paused: {sentence(now, config, channel.mention if channel else None, platform)}."
        return (f"{profile.name} is paused: it answers messages with a short note and its workflows do not run. "
                f"Resume it with {command_of(config, member_id)} resume.")
    if not changed:
        return f"{profile.name} is not paused."
    return f"{profile.name} is back: it answers messages again and its workflows run on schedule."


def _local(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    today = utcnow().astimezone(ZoneInfo(zone)).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local.day} {local:%b %H:%M}"
