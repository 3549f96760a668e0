"""Plans: what a member drafted in a conversation, until the person who asked starts it.

Invariants a reader must not break:
- A member never activates a workflow by itself. `propose` only checks the draft (exactly as
  `workflow apply` does, nothing written) and posts the plan card; the workflow is created or
  changed, and scheduled, only by `start`: a Start click or a typed "yes" by the person who
  asked, or by an admin.
- A plan moves on once: every move is an UPDATE guarded by its status (`storage.plans.settle`),
  and `start` applies the workflow in the same transaction as that update, so a double click,
  or a click racing a typed "yes", creates one workflow version.
- A scheduled workflow's times are in the asking person's time zone (`people:`, else their
  Slack profile), else the member's, else the workspace's; never the one the model chose. When
  the model chose another, the plan says so.
- A plan not started within `EXPIRES_AFTER` expires (the reconciler's pass) and its card says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.channels import Channel, ChannelError
from agents.messages import (
    PLAN_CANCEL_ACTION,
    PLAN_CHANGE_ACTION,
    PLAN_START_ACTION,
    Button,
    Card,
    Field,
    InboundAction,
    MessageRef,
)
from agents.tools.context import ToolContext
from agents.tools.registry import ToolError, known_tools, resolve
from jobs import schedules, team
from jobs.builder import words
from jobs.people import People
from jobs.runtime import Runtime
from jobs.workflows import apply as core
from jobs.workflows.definition import ScheduleTrigger, WorkflowDefinition
from storage import activity, conversations, members
from storage import plans as store
from storage import workflows as workflow_store
from storage.models import Plan, utcnow

log = logging.getLogger(__name__)

EXPIRES_AFTER = timedelta(days=7)
# A short typed answer that means "go ahead" (a longer message goes to the member as usual).
_YES = re.compile(r"^\s*(yes|yes please|yep|yeah|ja|start|start it|go|go ahead|do it|ok|okay|ok,? start|sounds good|"
                  r"looks good|lgtm|approved?|👍|✅)[\s.!]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Drafted:
    """What `propose` tells the model."""

    plan_id: str
    workflow: str
    schedule: str
    notes: tuple[str, ...]

    def for_model(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "workflow": self.workflow,
            "status": "proposed: posted in this conversation with Start / Change / Cancel buttons",
            "when": self.schedule,
            "notes": list(self.notes),
            "next": "Nothing runs until the person presses Start or answers yes. Tell them in one or two "
                    "sentences; do not repeat the plan or say it has started.",
        }


async def propose(rt: Runtime, ctx: ToolContext, document: dict[str, Any], *, change: bool) -> Drafted:
    """Check the draft and post it as a plan in the conversation; raises `ToolError` (which the
    model reads) naming exactly what is missing or wrong."""
    if ctx.conversation is None:
        raise ToolError("workflows are planned in a conversation with the person who wants them")
    platform = ctx.channel.platform
    member_id = ctx.member.id
    people = People.from_config(rt.loaded.config)
    doc = dict(document)
    owner = doc.get("member")
    if owner not in (None, member_id):
        raise ToolError(f"member: you can only build your own workflows, not {owner}'s; suggest the person asks {owner}")
    doc["member"] = member_id
    if doc.get("autonomy") == "auto" and not people.is_admin(ctx.user_id, platform):
        raise ToolError("autonomy: only an admin may set `auto`; use `approve` (ask before anything leaves the team), "
                        "or tell the person an admin has to set it")
    person = people.person_of(ctx.user_id, platform)
    zone, whose = await _zone(rt, ctx, person)
    notes: list[str] = []
    trigger = doc.get("trigger")
    if isinstance(trigger, dict) and "schedule" in trigger:
        drafted = trigger.get("timezone")
        if drafted and drafted != zone:
            notes.append(f"Times are in {whose} time zone, {zone} (not {drafted}).")
        doc["trigger"] = {**trigger, "timezone": zone}
    text = json.dumps(doc, ensure_ascii=False)
    source = "update_workflow" if change else "create_workflow"
    async with rt.db.session() as session:
        name = doc.get("name")
        existing = await workflow_store.by_name(session, name) if isinstance(name, str) else None
        if change and existing is None:
            raise ToolError(f"name: there is no workflow named {name!r} to change; use create_workflow for a new one")
        if not change and existing is not None:
            raise ToolError(f"name: a workflow named {name!r} exists already (version {existing.active_version}, "
                            f"{existing.status}); use update_workflow to change it, or choose another name")
        if existing is not None:
            may_manage(people, existing.member_id, existing.created_by, member_id, ctx.user_id, platform, "change")
        try:
            await core.apply(session, [core.Source(source, text)], created_by=person or ctx.user_id, check_only=True,
                             admin=people.is_admin(ctx.user_id, platform), home_conversation=ctx.conversation.conversation,
                             team_conversations=await team.conversations(rt.db, rt.loaded.config))
        except core.ApplyError as exc:
            raise ToolError(f"{exc}. Ask the person for what is missing or wrong rather than guessing.") from None
        definition = WorkflowDefinition.model_validate(doc)
        key = ctx.effects.next_id("plan") if ctx.effects is not None else f"{ctx.run_id}-{ctx.call_id}"
        plan_id = "pl-" + hashlib.sha1(key.encode()).hexdigest()[:16]  # the same on a retried turn
        plan = await store.get(session, plan_id)
        replaced: list[Plan] = []
        if plan is None:
            for older in await store.open_in(session, member_id, platform, ctx.conversation.conversation, ctx.conversation.thread):
                if older.workflow == definition.name and await store.settle(session, older.id, "superseded", ctx.user_id):
                    replaced.append(older)
            plan = await store.add(session, Plan(
                id=plan_id, member_id=member_id, workflow=definition.name, definition=doc,
                base_version=existing.active_version if existing is not None else None, status="proposed",
                requester=ctx.user_id, person=person, platform=platform, conversation=ctx.conversation.conversation,
                thread=ctx.conversation.thread, conversation_id=ctx.conversation_id, notes=notes,
                created_at=utcnow(), expires_at=utcnow() + EXPIRES_AFTER,
            ))
        workspace_zone = (await members.workspace(session)).timezone
    for older in replaced:  # after the commit: no platform call inside a transaction
        await _quietly_update(rt, older, "Replaced by a newer plan below.")
    if plan.message is None:
        card = await render(rt, plan, ctx.channel, f"Waiting for {ctx.channel.mention(plan.requester)} to start it "
                                                    f"(or say yes). It expires in {EXPIRES_AFTER.days} days.", buttons=True)
        try:
            posted = await ctx.channel.send_card(ctx.conversation, card, effect_id=plan_id)
        except ChannelError as exc:
            raise ToolError(f"could not post the plan here: {exc.code}") from None
        async with rt.db.session() as session:
            await store.set_message(session, plan_id, posted.message)
    return Drafted(plan_id, definition.name, words.trigger_in_words(definition, workspace_zone), tuple(notes))


async def render(rt: Runtime, plan: Plan, channel: Channel, status: str, *, buttons: bool = False) -> Card:
    """The plan card: its steps as numbered tasks, when it runs, who approves, the autonomy."""
    definition = WorkflowDefinition.model_validate(plan.definition)
    async with rt.db.session() as session:
        member = await members.profile(session, plan.member_id)
        zone = (await members.workspace(session)).timezone
    tools = {t.name: t for t in resolve([n for n in _step_tools(definition) if n in set(known_tools())])}
    autonomy = definition.autonomy or (member.autonomy if member is not None else "approve")
    people = People.from_config(rt.loaded.config)
    mentions = {p: channel.mention(people.user_id(p, plan.platform)) for p in people.accounts}
    requester = channel.mention(plan.requester)
    title = f"Plan: {definition.name}" if plan.base_version is None else f"Change to {definition.name} (after version {plan.base_version})"
    when = words.trigger_in_words(definition, zone)
    body = "\n".join([definition.description, *plan.notes]).strip()
    return Card(
        text=f"{title} — {when}. {status}",
        title=title,
        fields=(Field("When", when), Field("Approvals", words.approvers_in_words(definition, mentions, requester)),
                Field("Autonomy", words.autonomy_in_words(autonomy))),
        body=body,
        status=status,
        tasks=words.tasks(definition, tools),
        buttons=(Button(PLAN_START_ACTION, "Start", plan.id, "primary"), Button(PLAN_CHANGE_ACTION, "Change", plan.id),
                 Button(PLAN_CANCEL_ACTION, "Cancel", plan.id, "danger")) if buttons else (),
    )


def _step_tools(definition: WorkflowDefinition) -> list[str]:
    from jobs.workflows.definition import ToolStep, iter_steps

    return sorted({step.tool for _, step in iter_steps(definition) if isinstance(step, ToolStep)})


# --- the person's answer -------------------------------------------------------------------------


async def act(rt: Runtime, action: InboundAction) -> str:
    """A click on Start, Change or Cancel (the action job)."""
    async with rt.db.session() as session:
        plan = await store.get(session, action.object_id)
    if plan is None or plan.member_id != action.member_id:
        return "no such plan"
    channel = rt.channels(plan.platform, plan.member_id)
    people = People.from_config(rt.loaded.config)
    if not (people.same(plan.requester, action.user_id, action.platform) or people.is_admin(action.user_id, action.platform)):
        await _notice(channel, action, f"Only {channel.mention(plan.requester)} (who asked for it) or an admin can "
                                       "start, change or cancel this plan.")
        return "refused"
    if plan.status != "proposed":
        await _notice(channel, action, f"This plan is {_STATUS_WORDS.get(plan.status, plan.status)} already.")
        return f"already {plan.status}"
    if action.action == PLAN_START_ACTION:
        return (await start(rt, plan, action.user_id))[0]
    if action.action == PLAN_CHANGE_ACTION:
        return await _change(rt, plan, action.user_id, channel)
    return await _cancel(rt, plan, action.user_id, channel)


_STATUS_WORDS = {"started": "started", "cancelled": "cancelled", "expired": "expired", "superseded": "replaced by a newer one",
                 "changing": "being changed"}


async def typed_start(rt: Runtime, member_id: str, platform: str, where: MessageRef, user_id: str, text: str) -> str | None:
    """A typed "yes" in a conversation with an open plan starts it, as Start would: the reply
    to post, or None when this message is not that (the member answers it as usual)."""
    if not _YES.match(text or ""):
        return None
    async with rt.db.session() as session:
        open_plans = await store.open_in(session, member_id, platform, where.conversation, where.thread)
    if not open_plans:
        return None
    plan = open_plans[0]
    people = People.from_config(rt.loaded.config)
    if not (people.same(plan.requester, user_id, platform) or people.is_admin(user_id, platform)):
        return None
    outcome, said = await start(rt, plan, user_id)
    return said if outcome in ("started", "failed") else None


async def start(rt: Runtime, plan: Plan, by: str) -> tuple[str, str]:
    """Create (or change) the workflow and schedule it; (outcome, the sentence for the person)."""
    channel = rt.channels(plan.platform, plan.member_id)
    home = {"platform": plan.platform, "conversation": plan.conversation, "thread": plan.thread,
            "person": plan.person or plan.requester}
    try:
        async with rt.db.session() as session:
            if not await store.settle(session, plan.id, "started", by):
                return "already decided", ""
            people = People.from_config(rt.loaded.config)
            results = await core.apply(session, [core.Source(plan.workflow, json.dumps(plan.definition))],
                                       created_by=plan.person or plan.requester,
                                       admin=people.is_admin(plan.requester, plan.platform) or people.is_admin(by, plan.platform),
                                       home_conversation=plan.conversation,
                                       team_conversations=await team.conversations(rt.db, rt.loaded.config))
            workflow = await workflow_store.by_name(session, plan.workflow)
            assert workflow is not None
            await store.set_home(session, workflow.id, home)
            version = results[0].version
            who = people.person_of(by, plan.platform) or by
            await activity.record(session, member_id=plan.member_id, actor_type="person", actor_id=who, action="plan.started",
                                  description=f"{who} started {plan.workflow} (version {version}) from a plan",
                                  entity_type="workflow", entity_id=plan.workflow, details={"plan": plan.id})
    except core.ApplyError as exc:  # the world changed since the draft (a name taken, a tool gone)
        async with rt.db.session() as session:
            await store.settle(session, plan.id, "cancelled", by)
        said = f"I could not start it: {exc}. Tell me what to change and I will draft it again."
        await _quietly_update(rt, plan, f"Could not start: {exc}")
        await _remember(rt, plan, said)
        return "failed", said
    next_run = await _schedule(rt, plan)
    when = f" Next run: {next_run}." if next_run else ""
    said = f"Started *{plan.workflow}* (version {version}).{when}"
    await _quietly_update(rt, plan, f"✅ Started by {channel.mention(by)} at {_clock(rt)}.{when}")
    await _remember(rt, plan, said)
    log.info("plan started", extra={"member": plan.member_id, "workflow": plan.workflow, "plan": plan.id})
    return "started", said


async def _schedule(rt: Runtime, plan: Plan) -> str | None:
    """Queue the next slot now (the reconciler would within seconds); the slot in words."""
    definition = WorkflowDefinition.model_validate(plan.definition)
    trigger = definition.trigger
    if not isinstance(trigger, ScheduleTrigger):
        return None
    if rt.redis is not None:
        try:
            await schedules.reconcile(rt.db, rt.redis)
        except Exception:  # noqa: BLE001 - the reconciler's next pass queues it
            log.warning("schedule not queued now; the reconciler will", exc_info=True)
    zone = ZoneInfo(trigger.timezone or rt.loaded.config.workspace.timezone)
    slot = schedules.next_slot(trigger.schedule, zone, datetime.now(UTC)).astimezone(zone)
    return f"{slot:%a %d %b, %H:%M} ({words.zone_in_words(str(zone))})"


async def _change(rt: Runtime, plan: Plan, by: str, channel: Channel) -> str:
    async with rt.db.session() as session:
        if not await store.settle(session, plan.id, "changing", by):
            return "already decided"
    await _quietly_update(rt, plan, f"✏️ {channel.mention(by)} asked for changes: nothing is set up yet.")
    question = f"What would you like to change in *{plan.workflow}*?"
    try:
        await channel.post(MessageRef(plan.conversation, None, plan.thread), question, effect_id=f"{plan.id}-change")
    except ChannelError as exc:
        log.info("change question not posted: %s", exc.code)
    # The draft goes back into the conversation (our history, not the platform's): the member's
    # next turn reads it and drafts again with the person's changes.
    await _remember(rt, plan, f"{question}\n\n(The draft plan, not started:\n```json\n{json.dumps(plan.definition, ensure_ascii=False)}\n```)")
    return "changing"


async def _cancel(rt: Runtime, plan: Plan, by: str, channel: Channel) -> str:
    async with rt.db.session() as session:
        if not await store.settle(session, plan.id, "cancelled", by):
            return "already decided"
    await _quietly_update(rt, plan, f"Cancelled by {channel.mention(by)}: nothing was set up.")
    await _remember(rt, plan, f"(The plan for {plan.workflow} was cancelled; nothing was set up.)")
    return "cancelled"


# --- expiry (queued by `jobs.builder.expiry`) ------------------------------------------------------


def expire_job(plan_id: str) -> str:
    """RQ entry point (sync, runs on the worker's persistent loop)."""
    from jobs import loop
    from jobs.runtime import current

    return loop.run(expire(current(), plan_id))


async def expire(rt: Runtime, plan_id: str) -> str:
    async with rt.db.session() as session:
        plan = await store.get(session, plan_id)
        if plan is None or not await store.settle(session, plan_id, "expired", None):
            return "not open"
    await _quietly_update(rt, plan, f"⌛ Expired after {EXPIRES_AFTER.days} days without a start: nothing was set up. "
                                    "Ask me again any time.")
    return "expired"


# --- helpers --------------------------------------------------------------------------------------


def may_manage(people: People, owner: str, creator: str | None, member_id: str, user_id: str, platform: str, what: str) -> None:
    """Only the workflow's creator or an admin may change, pause or run it from chat."""
    if owner != member_id:
        raise ToolError(f"that workflow is {owner}'s, not yours; suggest the person asks {owner}")
    if people.is_admin(user_id, platform) or (creator is not None and people.same(creator, user_id, platform)):
        return
    raise ToolError(f"only {creator or 'its creator'} (who set it up) or an admin may {what} it; tell the person so")


async def _zone(rt: Runtime, ctx: ToolContext, person: str | None) -> tuple[str, str]:
    """(IANA zone, whose): the person's (`people:`, else their profile), the member's, the workspace's."""
    config = rt.loaded.config
    entry = next((p for p in config.people if p.id == person), None)
    if entry is not None and entry.timezone:
        return entry.timezone, "your"
    try:
        info = await ctx.channel.lookup_user(ctx.user_id)
    except ChannelError:
        info = None
    if info is not None and info.timezone and _known(info.timezone):
        return info.timezone, "your"
    if ctx.member.timezone:  # as stored: an admin may have changed it from chat
        return ctx.member.timezone, "my"
    async with rt.db.session() as session:
        return (await members.workspace(session)).timezone, "the workspace's"


def _known(zone: str) -> bool:
    """A profile's zone is the platform's data: trusted only when Python knows it."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _clock(rt: Runtime) -> str:
    return f"{datetime.now(ZoneInfo(rt.loaded.config.workspace.timezone)):%H:%M}"


async def _quietly_update(rt: Runtime, plan: Plan, status: str) -> None:
    """Show the plan's new state on its card; a failed update never undoes the move."""
    if plan.message is None:
        async with rt.db.session() as session:
            fresh = await store.get(session, plan.id)
        if fresh is None or fresh.message is None:
            return
        plan = fresh
    try:
        channel = rt.channels(plan.platform, plan.member_id)
        card = await render(rt, plan, channel, status)
        await channel.update(MessageRef(plan.conversation, plan.message, plan.thread), card)
    except (ChannelError, LookupError) as exc:
        log.info("plan card not updated: %s", exc, extra={"member": plan.member_id, "plan": plan.id})


async def _remember(rt: Runtime, plan: Plan, text: str) -> None:
    """Put what happened to the plan in the conversation's history, so the member knows."""
    if plan.conversation_id is None:
        return
    async with rt.db.session() as session:
        await conversations.add_message(session, plan.conversation_id, "assistant", plan.member_id, text)


async def _notice(channel: Channel, action: InboundAction, text: str) -> None:
    try:
        await channel.notice(action.where, action.user_id, text)
    except ChannelError as exc:
        log.info("notice not sent: %s", exc.code)
