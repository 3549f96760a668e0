"""A member's home tab (Slack's App Home), published for one person at a time.

Published when the person opens it (`HOME_ACTION`, recorded like a click and handled by a job
on the turns queue) and again after each click they make on it (`jobs.actions.handle`), so
what they changed shows where they are looking. It shows the viewer's own view: who the
member is and its status, its active workflows with last and next run (and Pause / Resume /
Run now where the viewer may), the approvals waiting for the viewer, recent activity, and
spend this period."""

from __future__ import annotations

import logging

from agents.channels import ChannelError
from agents.messages import Card, Page
from jobs.console import commands, facts, pages
from jobs.people import People
from jobs.runs import approvals as approval_rules
from jobs.runtime import Runtime
from storage import activity, members

log = logging.getLogger(__name__)

WORKFLOWS_SHOWN = 6
APPROVALS_SHOWN = 5
ACTIVITY_SHOWN = 8


async def publish(rt: Runtime, member_id: str, user_id: str, platform: str = "slack") -> str:
    """Publish the member's home tab for `user_id`; a short outcome."""
    channel = rt.channels(platform, member_id)
    people = People.from_config(rt.loaded.config)
    admin = await people.may_administer(user_id, platform, channel)
    config = rt.loaded.config
    zone = config.workspace.timezone
    async with rt.db.session() as session:
        profile = await members.profile(session, member_id)
        recent = await activity.recent(session, member_id, ACTIVITY_SHOWN)
    if profile is None:
        return "no such member"
    status = await commands.status_page(rt, profile, user_id, platform, channel, admin)
    items = [i for i in await facts.workflows(rt, member_id, user_id, platform, admin, paused=profile.status == "paused")
             if i.row.status == "active" or i.may_manage]
    waiting = await facts.pending_for(rt, member_id, user_id, platform, channel, admin)
    cards: list[Card] = [*status.cards]
    cards.append(Card(text="Workflows", title=f"Workflows ({len(items)})" if items else "Workflows",
                      status="" if items else f"None yet: ask {profile.name} in a DM to set one up."))
    cards += [pages.workflow_card(i, zone) for i in items[:WORKFLOWS_SHOWN]]
    cards.append(Card(text="Your approvals", title=f"Waiting for your approval ({len(waiting)})",
                      status="" if waiting else "Nothing waits for you."))
    cards += [await approval_rules.render(rt, row, channel) for row in waiting[:APPROVALS_SHOWN]]
    cards.append(pages.activity_card(recent, zone))
    period = await facts.period(rt, member_id)
    mine = await facts.person_spend(rt, None, user_id, period.since)
    cards.append(Card(text="Your spend", title=f"Your spend ({period.label})", status=pages.spend_text(mine, config)))
    command = next((m.command for m in config.members if m.id == member_id), f"/{member_id}")
    page = Page(text="", cards=tuple(cards), note=f"`{command} help` lists every command.")
    try:
        await channel.publish_home(user_id, page)
    except ChannelError as exc:
        log.warning("home tab not published: %s", exc.code, extra={"member": member_id})
        return f"not published: {exc.code}"
    return "published"
