"""Effects in conversations: a member asks first before anything leaves the team.

In a turn, every tool call passes `turn_gate` (the `ToolContext.gate` of `jobs.turns`). A call
that is an effect (`jobs.autonomy`: an effect tool, or `post_message` outside the turn's own
conversation and the team's channels):
- under `auto` runs;
- under `notify` is refused: the model gets a tool error;
- under `approve` does not run now. The member posts a confirmation card in the turn's thread
  ("Nova wants to post in #general: «…»  [Post it] [Don't]"), the pending call is stored as an
  effect row of kind `confirm` (its id is the card's buttons' value), and the model is told it
  waits for the person's OK.

The click comes back as an `InboundAction` (`EFFECT_CONFIRM_ACTION` / `EFFECT_DECLINE_ACTION`),
recorded before the ack like every click, and `act` handles it in a worker. Invariants:
- only the person who asked, or an admin, decides; anyone else gets a private notice and
  nothing changes;
- exactly one decision: the row moves from `started` to `confirmed` or `declined` in one guarded
  UPDATE; a second click (or a replay) changes nothing and is told so privately;
- the confirmed call runs once: it runs with the confirm id as its turn id, so its own effect
  log (`<confirm id>-post-1`) keeps a retried job from posting twice; a click whose worker died
  after the claim is carried on when the sweeper hands it over again (the row names the click);
- the card is updated with the outcome ("✅ Posted by @ana's OK", "Not posted").
"""

from __future__ import annotations

import json
import logging
from typing import Any

from agents.channels import Channel, ChannelError
from agents.members import MemberProfile
from agents.messages import (
    EFFECT_CONFIRM_ACTION,
    EFFECT_DECLINE_ACTION,
    Button,
    Card,
    InboundAction,
    MessageRef,
)
from agents.tools.context import Held, HistoryLine, ToolContext
from agents.tools.registry import Tool, ToolError, resolve
from jobs import autonomy, team
from jobs.people import People
from jobs.runtime import Runtime
from jobs.spend import caps
from jobs.tool_effects import ToolEffects
from storage import activity, conversations, effects, members

log = logging.getLogger(__name__)

ACTIONS = frozenset({EFFECT_CONFIRM_ACTION, EFFECT_DECLINE_ACTION})
KIND = "confirm"  # the effect rows of pending calls
SHOWN_LIMIT = 1500  # characters of a pending call shown on its card


def turn_gate(rt: Runtime, member: MemberProfile, conversation: MessageRef, requester: str, platform: str,
              conversation_id: int | None = None) -> Any:
    """The gate of a turn's tool calls (see the module docstring). `conversation`: where the
    member answers (the card goes there); `requester`: who asked (who may confirm);
    `conversation_id`: the stored conversation, which is told the outcome (the member's later
    turns then know whether it happened)."""
    level = autonomy.effective(None, member.autonomy)

    async def gate(tool: Tool[Any], ctx: ToolContext, raw: Any) -> Held | None:
        inside = await team.conversations(rt.db, rt.loaded.config) | {conversation.conversation}
        what = autonomy.call_effect(tool.name, tool.effect, raw, inside)
        if what is None:
            return None
        config = rt.loaded.config
        if level == "auto":  # it acts now: it takes a slot of the member's cap first
            slot = ctx.effects.next_id("slot") if ctx.effects is not None else f"{ctx.run_id}-{ctx.call_id}-slot"
            capped = await caps.take(rt.db, config, member.id, slot, run_id=ctx.run_id)
            return None if capped is None else Held(capped.refusal(config, ctx.channel.mention))
        extra = {"run_id": ctx.run_id, "member": member.id}
        if level == "notify":
            log.info("turn effect refused (autonomy notify): %s", what, extra=extra)
            return Held(f"Not allowed: {what} would leave the team, and my autonomy is notify (I only report). "
                        "Tell the person what you would do; an admin can change my autonomy.")
        # No card for what the cap would refuse anyway; the slot is taken when the person says OK.
        capped = await caps.room(rt.db, config, member.id, run_id=ctx.run_id)
        if capped is not None:
            return Held(capped.refusal(config, ctx.channel.mention))
        return await _ask(rt, member, ctx, tool, raw, what, conversation, requester, platform, conversation_id)

    return gate


async def _ask(rt: Runtime, member: MemberProfile, ctx: ToolContext, tool: Tool[Any], raw: Any, what: str,
               conversation: MessageRef, requester: str, platform: str, conversation_id: int | None) -> Held:
    """Store the pending call and post its card, each at most once for this call of this turn
    (a retried turn finds both)."""
    confirm_id = ctx.effects.next_id(KIND) if ctx.effects is not None else f"{ctx.run_id}-{ctx.call_id}-{KIND}"
    pending = {"tool": tool.name, "input": raw if isinstance(raw, dict) else {}, "what": what, "member": member.id,
               "requester": requester, "platform": platform, "conversation": conversation.conversation,
               "thread": conversation.thread, "conversation_id": conversation_id}
    async with rt.db.session() as session:
        row, _ = await effects.begin_with(session, confirm_id, KIND, pending)
        status, stored = row.status, dict(row.result)
    who = ctx.channel.mention(requester)
    if status != "started":
        return Held(f"{who} already answered this request ({stored.get('decision', status)}).", error=False)
    if not stored.get("card"):
        card = _card(ctx.channel, member, stored, confirm_id)
        posted = await ctx.channel.send_card(conversation, card, effect_id=confirm_id)
        async with rt.db.session() as session:
            await effects.remember_intent(session, confirm_id, {**stored, "card": posted.message})
        log.info("asked %s to confirm %s", requester, what, extra={"run_id": ctx.run_id, "member": member.id})
    return Held(f"Not done yet: {what} leaves the team, so I asked {who} to confirm with a button in this thread. It happens "
                "only when they click; tell them it waits for their OK and do not call the tool again.", error=False)


def _card(channel: Channel, member: MemberProfile, pending: dict[str, Any], confirm_id: str, status: str = "",
          buttons: bool = True) -> Card:
    """The confirmation card: what the member wants to do, and Post it / Don't."""
    raw = pending.get("input") or {}
    if pending.get("tool") == autonomy.POST_TOOL:
        target = autonomy.post_target(raw) or "?"
        title = f"{member.name} wants to post in {channel.mention_conversation(target)}"
        body = str(raw.get("text", ""))
        yes = "Post it"
    else:
        title = f"{member.name} wants to use {pending.get('tool')} ({pending.get('what')})"
        body = json.dumps(raw, ensure_ascii=False, indent=1, default=str)
        yes = "Do it"
    body = body if len(body) <= SHOWN_LIMIT else body[:SHOWN_LIMIT] + "…"
    actions = (Button(EFFECT_CONFIRM_ACTION, yes, confirm_id, style="primary"),
               Button(EFFECT_DECLINE_ACTION, "Don't", confirm_id, style="danger")) if buttons else ()
    return Card(text=f"{title}: «{body[:200]}»", title=title, body=f"«{body}»", status=status, buttons=actions)


async def act(rt: Runtime, action: InboundAction) -> str:
    """A click on a confirmation card: check who, decide once, run the call (confirm) and show
    the outcome on the card. Anything that changed nothing is told to the clicker privately."""
    confirm = action.action == EFFECT_CONFIRM_ACTION
    async with rt.db.session() as session:
        row = await effects.get(session, action.object_id)
    if row is None or row.kind != KIND or row.result.get("member") != action.member_id:
        return await _tell(rt, action, "unknown", "This request no longer exists.")
    pending = dict(row.result)
    channel = rt.channels(action.platform, action.member_id)
    requester = str(pending.get("requester"))
    directory = People.from_config(rt.loaded.config)
    if not directory.same(requester, action.user_id, action.platform) and not directory.is_admin(action.user_id, action.platform):
        return await _tell(rt, action, "refused",
                           f"Only {channel.mention(requester)} (who asked) or an admin can answer this request.")
    async with rt.db.session() as session:
        claimed = await effects.claim(session, action.object_id, "started", "confirmed" if confirm else "declined",
                                      {**pending, "claimed_by": action.key})
    # The same click handled again (its worker died after the claim, the sweeper re-enqueued
    # it) carries on: the call's own effect ids keep it from acting twice.
    again = row.status == ("confirmed" if confirm else "declined") and pending.get("claimed_by") == action.key
    if not claimed and not again:
        return await _tell(rt, action, "unchanged", "This request has been answered already.")
    member = await _profile(rt, action.member_id)
    if member is None:
        return await _tell(rt, action, "unknown", "This request no longer exists.")
    by = channel.mention(action.user_id)
    if not confirm:
        await _finish(rt, action, channel, member, pending, "declined", f"Not done: {by} said no.", None)
        return "declined"
    output, problem = await _run(rt, member, channel, pending, action.object_id)
    if problem is not None:
        await _finish(rt, action, channel, member, pending, "failed", f"⚠️ {by} said OK, but it did not work: {problem}", None)
        return f"failed: {problem}"
    done = "Posted" if pending.get("tool") == autonomy.POST_TOOL else "Done"
    await _finish(rt, action, channel, member, pending, "confirmed", f"✅ {done} by {by}'s OK", output)
    return "confirmed"


async def _run(rt: Runtime, member: MemberProfile, channel: Channel, pending: dict[str, Any], confirm_id: str) -> tuple[Any, str | None]:
    """The confirmed call itself, without a gate (the person said OK), under the confirm id."""
    try:
        [tool] = resolve([str(pending.get("tool"))])
    except KeyError:
        return None, f"the tool {pending.get('tool')} no longer exists"
    where = MessageRef(str(pending.get("conversation")), None, pending.get("thread"))

    async def no_history(_limit: int) -> list[HistoryLine]:
        return []

    ctx = ToolContext(member=member, channel=channel, conversation=where, user_id=str(pending.get("requester")),
                      run_id=confirm_id, history=no_history, effects=ToolEffects(rt, confirm_id))
    # The OK'd call takes a slot of the member's cap now (keyed by the confirm id: a retried
    # click takes no second one); past the cap it does not run, and the card says why.
    capped = await caps.take(rt.db, rt.loaded.config, member.id, f"{confirm_id}-slot", run_id=confirm_id)
    if capped is not None:
        return None, capped.reason(rt.loaded.config, channel.mention)
    try:
        return await tool.call(ctx, pending.get("input") or {}), None
    except ToolError as exc:
        return None, str(exc)
    except ChannelError as exc:
        return None, exc.code


async def _finish(rt: Runtime, action: InboundAction, channel: Channel, member: MemberProfile, pending: dict[str, Any],
                  decision: str, status: str, output: Any) -> None:
    """Record the outcome (the row `done`, a line in the activity feed, a line in the stored
    conversation) and show it on the card."""
    conversation_id = pending.get("conversation_id")
    async with rt.db.session() as session:
        if isinstance(conversation_id, int):
            await conversations.add_message(session, conversation_id, "assistant", member.id, f"({status}: {pending.get('what')})")
        await effects.finish(session, action.object_id, {**pending, "decision": decision, "by": action.user_id,
                                                         "output": output if isinstance(output, dict) else None})
        await activity.record(session, member_id=member.id, actor_type="person", actor_id=action.user_id,
                              action=f"effect_{decision}", description=f"{pending.get('what')}: {decision} by {action.user_id}",
                              entity_type="effect", entity_id=action.object_id, details={"tool": pending.get("tool")})
    if action.where is not None:
        try:
            await channel.update(action.where, _card(channel, member, pending, action.object_id, status, buttons=False))
        except ChannelError as exc:
            log.info("confirmation card not updated: %s", exc.code, extra={"member": member.id})


async def _profile(rt: Runtime, member_id: str) -> MemberProfile | None:
    async with rt.db.session() as session:
        return await members.profile(session, member_id)


async def _tell(rt: Runtime, action: InboundAction, outcome: str, sentence: str) -> str:
    try:
        channel = rt.channels(action.platform, action.member_id)
        await channel.notice(action.where, action.user_id, sentence)
    except (ChannelError, LookupError) as exc:
        log.info("notice to %s not sent: %s", action.user_id, exc)
    return f"{outcome}: {sentence}"
