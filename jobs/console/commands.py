"""The member's slash command, answered by a job on the turns queue.

Invariants a reader must not break:
- The command was recorded before Slack was acked (`jobs.actions.accept`): Slack never sends a
  slash command twice. This job answers it once (the action row's status guards it), privately
  to the person who typed it (`Channel.show`: an ephemeral, else a DM).
- Who may do what is decided here: everyone may look (`help`, `status`, `workflows`, `runs`,
  `approvals` — their own —, `activity`, `usage`); only an admin (`People.may_administer`) may
  `pause`, `resume`, `team` and `config`. Anyone else asking for those gets a clear refusal and
  nothing changes. An unknown subcommand gets the help.
- Buttons shown here (a workflow's Pause / Resume / Run now, an approval's Approve / Reject)
  are ordinary clicks: checked again when clicked (`jobs.console.controls`, `jobs.runs.approvals`).
"""

from __future__ import annotations

import logging

from agents.channels import Channel, ChannelError
from agents.members import MemberProfile
from agents.messages import InboundAction, Page
from jobs import pauses
from jobs.console import facts, forms, pages
from jobs.people import People
from jobs.runs import approvals as approval_rules
from jobs.runtime import Runtime
from storage import activity, approvals, members
from storage import workflows as store

log = logging.getLogger(__name__)

EVERYONE = frozenset({"help", "status", "workflows", "runs", "approvals", "activity", "usage"})
ADMIN_ONLY = frozenset({"pause", "resume", "team", "config"})
APPROVALS_SHOWN = 7  # an approval card is up to six blocks; a message holds fifty
ACTIVITY_SHOWN = 15


async def answer(rt: Runtime, action: InboundAction) -> str:
    """Answer one recorded command; a short outcome for the action's row."""
    channel = rt.channels(action.platform, action.member_id)
    sub = forms.subcommand(action)
    people = People.from_config(rt.loaded.config)
    admin = await people.may_administer(action.user_id, action.platform, channel)
    async with rt.db.session() as session:
        profile = await members.profile(session, action.member_id)
    if profile is None:
        return "no such member"
    command = pauses.command_of(rt.loaded.config, action.member_id)
    extra = {"member": action.member_id, "action": f"command {sub}"}
    if sub in ADMIN_ONLY and not admin:
        page, outcome = Page(text=f"Only an admin can use `{command} {sub}`. `{command} help` lists what you can do."), "refused"
    elif sub in EVERYONE or sub in ADMIN_ONLY:
        page, outcome = await _page(rt, action, channel, profile, sub, admin), sub
    else:
        page = pages.help_page(profile.name, command, admin, lead=f"I don't know `{command} {sub}`.")
        outcome = "help (unknown subcommand)"
    try:
        await channel.show(action.where, action.user_id, page)
    except ChannelError as exc:
        log.warning("command answer not shown: %s", exc.code, extra=extra)
        return f"{outcome}; not shown: {exc.code}"
    log.info("command %s answered", sub, extra=extra)
    return outcome


async def _page(rt: Runtime, action: InboundAction, channel: Channel, profile: MemberProfile, sub: str, admin: bool) -> Page:
    config = rt.loaded.config
    zone = config.workspace.timezone
    command = pauses.command_of(config, profile.id)
    viewer, platform = action.user_id, action.platform
    if sub in ("pause", "resume"):
        said = await pauses.set_paused(rt, profile.id, viewer, platform, channel, pause=sub == "pause")
        return Page(text=said)
    if sub == "config":  # normally opened in the web process (it needs the click's trigger)
        answer = await forms.form_for(rt.db, config, action, channel)
        return Page(text=answer if isinstance(answer, str) else "Open it again: the form could not be shown from here.")
    if sub == "status":
        return await status_page(rt, profile, viewer, platform, channel, admin)
    if sub == "workflows":
        items = await facts.workflows(rt, profile.id, viewer, platform, admin, paused=profile.status == "paused")
        return pages.workflows_page(profile.name, items, zone)
    if sub == "runs":
        return await _runs(rt, action, profile, command)
    if sub == "approvals":
        rows = await facts.pending_for(rt, profile.id, viewer, platform, channel, admin)
        cards = [await approval_rules.render(rt, row, channel) for row in rows[:APPROVALS_SHOWN]]
        page = pages.approvals_page(cards)
        if len(rows) > APPROVALS_SHOWN:
            page = Page(page.text, page.cards, note=f"{len(rows) - APPROVALS_SHOWN} more: `teammates approvals` lists them all.")
        return page
    if sub == "activity":
        async with rt.db.session() as session:
            recent = await activity.recent(session, profile.id, ACTIVITY_SHOWN)
        return Page(text=f"*What {profile.name} did lately*", cards=(pages.activity_card(recent, zone),))
    if sub == "usage":
        period = await facts.period(rt, profile.id)
        person = People.from_config(config).person_of(viewer, platform) or viewer
        return pages.usage_page(profile.name, period, await facts.member_spend(rt, profile.id, period.since),
                                await facts.person_spend(rt, None, viewer, period.since),
                                await facts.budget_use(rt, f"member:{profile.id}"),
                                await facts.budget_use(rt, f"person:{person}") or await facts.budget_use(rt, "person:default"), config)
    if sub == "team":
        return await team_page(rt, profile.id, channel)
    return pages.help_page(profile.name, command, admin)


async def status_page(rt: Runtime, profile: MemberProfile, viewer: str, platform: str, channel: Channel, admin: bool) -> Page:
    config = rt.loaded.config
    items = await facts.workflows(rt, profile.id, viewer, platform, admin, paused=profile.status == "paused")
    async with rt.db.session() as session:
        pending = len(await approvals.pending_of_member(session, profile.id))
    period = await facts.period(rt, profile.id)
    card = pages.who_card(profile, config, channel.mention, active=sum(1 for i in items if i.row.status == "active"),
                          pending=pending, spend=await facts.member_spend(rt, profile.id, period.since), period=period,
                          budget=await facts.budget_use(rt, f"member:{profile.id}"))
    lately = pages.performance_card(await facts.member_performance(rt, profile.id), config, facts.PERFORMANCE_DAYS)
    return Page(text="", cards=(card, lately))


async def team_page(rt: Runtime, member_id: str, channel: Channel) -> Page:
    period = await facts.period(rt, member_id)
    async with rt.db.session() as session:
        everyone = await members.profiles(session)
    spent = await facts.team_spend(rt, period.since)
    rows = [(p, spent.get(p.id, facts.Spend(0, 0.0))) for p in everyone]
    return pages.team_page(rows, period, rt.loaded.config, channel.mention)


async def _runs(rt: Runtime, action: InboundAction, profile: MemberProfile, command: str) -> Page:
    words = action.object_id.split()
    name = words[1] if len(words) > 1 else ""
    async with rt.db.session() as session:
        workflow = await store.by_name(session, name) if name else None
        mine = [w.name for w in await store.of_member(session, profile.id)]
    if workflow is None or workflow.member_id != profile.id:
        known = ", ".join(f"`{n}`" for n in mine[:20]) or f"none yet (ask {profile.name} in a DM to set one up)"
        lead = f"{profile.name} has no workflow named `{name}`. " if name else ""
        return Page(text=f"{lead}Which one? `{command} runs NAME` — {profile.name}'s workflows: {known}")
    return pages.runs_page(workflow, await facts.runs(rt, workflow), rt.loaded.config.workspace.timezone)
