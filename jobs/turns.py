"""The turn job: answer what a person wrote to a member, one turn per conversation at a time.

Invariants a reader must not break:
- The turns of one conversation run one at a time, in order: a turn first takes the
  conversation's lease (`conversations.take_turn`). A job that finds it taken returns; the
  holder starts the next job when it ends (the sweeper covers a holder that died).
- A turn answers every message of its conversation still waiting, oldest first, in one reply
  (two quick messages get one answer that reads both). Its history is the conversation as
  stored, in order: the previous reply is always in it, because a reply is stored in the same
  transaction that records its post as done, and the lease is released only then.
- A user message is stored once (unique on the inbound event), however often this runs.
- The reply is an effect (`reply-<first message id>`): written `started` with its text and the
  messages it answers before posting, `done` after. A retry that finds the text re-posts it
  (after asking the channel whether the post landed); it never asks the LLM again.
- Attempts are counted per message and capped (MAX_ATTEMPTS). A refusal no retry can change
  (channel gone, not a member, dead token) fails at once; other errors are retried by RQ until
  the cap. A message that cannot be answered ends `failed` with its reason, in the activity
  feed, and the person is told (a DM when the conversation's channel is gone).
- A failed LLM call posts a short apology with a "Try again" button and leaves the message
  `failed`, still in the conversation, so nothing the person wrote is lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import prompts
from agents.channels import Channel, ChannelError, is_permanent
from agents.messages import RETRY_TURN_ACTION, Button, MessageRef
from agents.tools.context import HistoryLine, ToolContext
from agents.tools.registry import resolve
from agents.turns import LlmUnavailable, OverBudget, TurnSettings, history_to_messages, run_turn
from jobs import capacity, confirm, intake, loop, pauses, tool_secrets
from jobs.builder import plans
from jobs.builder import tools as builder_tools
from jobs.people import People
from jobs.runtime import Runtime, current
from jobs.spend import limits as spend_limits
from jobs.spend import tell as spend_tell
from jobs.spend.meter import BudgetMeter
from jobs.tool_effects import ToolEffects
from storage import activity, conversations, effects, inbound, members
from storage.models import Effect, InboundEvent

log = logging.getLogger(__name__)

HISTORY_LIMIT = 40
MAX_ATTEMPTS = 3  # per message: the first try and two retries, then it is `failed`
APOLOGY = "Sorry, I can't reach my brain right now ({why}). Your message is saved: press *Try again* or just write again in a minute."
_WHY = {"rate_limited": "too many requests", "timeout": "it took too long", "unreachable": "the AI service is unreachable"}
GAVE_UP = "Sorry, I could not answer your message{where} (“{quote}”): {why}."
_GAVE_UP_WHY = {
    "channel_not_found": "I can no longer reach that conversation (the channel is gone or hidden from me). Please write to me here",
    "not_in_channel": "I am no longer a member of that channel. Please invite me back or write to me here",
    "is_archived": "that channel is archived. Please write to me here",
}


def answer_job(inbound_id: int) -> str:
    """RQ entry point (sync, runs on the worker's persistent loop)."""
    return loop.run(answer(current(), inbound_id))


@dataclass
class _Turn:
    """What one turn is answering: `batch` (oldest first) in one conversation."""

    batch: list[InboundEvent]
    conversation_id: int
    reply: Effect
    attempt: int
    retrying: set[int] = field(default_factory=set)  # left to RQ's retry: not started again now

    @property
    def lead(self) -> InboundEvent:
        return self.batch[0]

    @property
    def last(self) -> InboundEvent:
        return self.batch[-1]

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.batch]

    @property
    def reply_to(self) -> MessageRef:
        """Where the answer goes: DMs answer in place, channel messages in their thread."""
        m = self.lead
        return MessageRef(m.channel, None, m.thread_ts if m.kind in ("dm", "terminal") else (m.thread_ts or m.ts))


def _message(event: InboundEvent) -> MessageRef:
    """The stored message as the port names it (storage keeps its own column names)."""
    return MessageRef(event.channel, event.ts, event.thread_ts)


async def answer(rt: Runtime, inbound_id: int) -> str:
    """Answer the message (with any others waiting in its conversation); a short outcome."""
    lease = timedelta(seconds=rt.loaded.config.workers.turn_timeout)
    async with rt.db.session() as session:
        event = await inbound.get(session, inbound_id)
        if event is None:
            raise LookupError(f"inbound message {inbound_id} not found")
        if event.status not in inbound.PENDING:
            return f"already {event.status}"
        conversation = await conversations.get_or_create(
            session, event.member_id, event.platform, event.channel, inbound.conversation_key(event),
            event.user_id if event.kind == "dm" else None,
        )
    holder = uuid.uuid4().hex
    if not await _take_turn(rt, conversation.id, holder, lease):
        return "waiting: another turn of this conversation is running; it starts this one when it ends"
    retrying: set[int] = set()
    try:
        return await _answer_waiting(rt, event, conversation.id, lease, retrying)
    finally:
        async with rt.db.session() as session:
            await conversations.release_turn(session, conversation.id, holder)
        await _start_next(rt, event, retrying)


async def _take_turn(rt: Runtime, conversation_id: int, holder: str, lease: timedelta) -> bool:
    """Take the conversation's lease. Without a queue (`teammates chat`) nobody would start
    this turn later, so wait for it here instead."""
    deadline = asyncio.get_running_loop().time() + (lease.total_seconds() + 1 if rt.redis is None else 0)
    while True:
        async with rt.db.session() as session:
            if await conversations.take_turn(session, conversation_id, holder, lease):
                return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def _start_next(rt: Runtime, event: InboundEvent, retrying: set[int]) -> None:
    """Enqueue the turn for the oldest message still waiting in the conversation (one that
    arrived while this turn ran); messages RQ will retry keep their back-off."""
    if rt.redis is None:
        return
    async with rt.db.session() as session:
        waiting = [m for m in await inbound.pending_in(session, event) if m.id not in retrying]
    if not waiting:
        return
    try:
        await asyncio.to_thread(intake.enqueue_turn, rt.redis, waiting[0].id, rt.loaded.config.workers.turn_timeout, 2000 + waiting[0].attempts)
    except Exception:  # noqa: BLE001 - the sweeper enqueues it later
        log.warning("next turn of conversation not enqueued; the sweeper will", exc_info=True)


async def _answer_waiting(rt: Runtime, event: InboundEvent, conversation_id: int, lease: timedelta, retrying: set[int]) -> str:
    async with rt.db.session() as session:
        waiting = await inbound.pending_in(session, event)
        if not waiting:
            return "already answered"
        reply = await effects.begin(session, f"reply-{waiting[0].id}", "reply")
        planned = reply.result.get("inbound_ids")
        batch = [m for m in waiting if m.id in planned] if planned else waiting  # a stored answer keeps its messages
        spent = [m for m in batch if m.attempts >= MAX_ATTEMPTS]
        if not spent:
            await inbound.take(session, [m.id for m in batch], lease)
            for m in batch:
                await conversations.add_message(session, conversation_id, "user", m.user_id, m.text, m.ts, inbound_event_id=m.id)
    if spent:  # attempts that died without a word (killed workers): give up on these
        reason = f"gave up after {MAX_ATTEMPTS} attempts" + (f": {spent[0].error}" if spent[0].error else "")
        turn = _Turn(spent, conversation_id, reply, spent[0].attempts)
        await _give_up(rt, turn, reason, channel_gone=False)
        return f"failed: {reason}"
    turn = _Turn(batch, conversation_id, reply, batch[0].attempts + 1, retrying)
    try:
        return await _reply(rt, turn)
    except Exception as exc:
        return await _attempt_failed(rt, turn, exc)


async def _reply(rt: Runtime, turn: _Turn) -> str:
    lead, last = turn.lead, turn.last
    channel = rt.channels(lead.platform, lead.member_id)
    extra = {"run_id": f"turn-{lead.id}", "member": lead.member_id}
    reply = turn.reply
    if reply.status == "done":
        stored = MessageRef(turn.reply_to.conversation, str(reply.result.get("ts", "")) or None, turn.reply_to.thread)
        return await _finish(rt, turn, channel, str(reply.result.get("text", "")), stored, posted=False)
    text = reply.result.get("text")
    if text and (landed := await _landed(channel, turn, reply)):
        return await _finish(rt, turn, channel, str(text), landed, posted=False)
    if not text:
        await _quietly(channel.set_working(_message(last)), extra)
        # A paused member says so, and who paused it (no LLM call, no plan started).
        generated = await pauses.answer_if_paused(rt, lead.member_id, channel)
        # A typed "yes" to an open plan starts it, as its Start button would (no LLM call).
        if generated is None:
            generated = await plans.typed_start(rt, lead.member_id, lead.platform, turn.reply_to, last.user_id, last.text)
        if generated is None:
            generated = await _generate(rt, turn, channel, extra)
        if generated is None:
            return "apologised"
        text = generated
        async with rt.db.session() as session:
            await effects.remember_intent(session, reply.id, {"text": text, "inbound_ids": turn.ids})
    else:
        log.info("re-posting the stored answer (not asking the LLM again)", extra=extra)
    posted = await channel.post(turn.reply_to, str(text), effect_id=reply.id)
    _observe_latency(rt, last)
    return await _finish(rt, turn, channel, str(text), posted, posted=True)


async def _generate(rt: Runtime, turn: _Turn, channel: Channel, extra: dict[str, str]) -> str | None:
    """The LLM turn; None when the LLM was unavailable (the person got an apology)."""
    lead, last = turn.lead, turn.last
    run_id = f"turn-{lead.id}"  # the same on every attempt: tool effects keep their ids
    async with rt.db.session() as session:
        member = await members.profile(session, lead.member_id)
        workspace = await members.workspace(session)
        colleagues = await members.profiles(session)
        stored = await conversations.recent(session, turn.conversation_id, HISTORY_LIMIT)
    if member is None:
        raise LookupError(f"member {lead.member_id} not found")
    ctx = ToolContext(
        member=member,
        channel=channel,
        conversation=turn.reply_to,
        user_id=last.user_id,
        run_id=run_id,
        history=lambda limit: _history_lines(rt, turn.conversation_id, limit),
        effects=ToolEffects(rt, run_id),
        conversation_id=turn.conversation_id,
        secrets=tool_secrets.reader(rt),
        # An effect (a post outside this conversation, an effect tool) asks the person first.
        gate=confirm.turn_gate(rt, member, turn.reply_to, last.user_id, lead.platform, turn.conversation_id),
    )
    history = history_to_messages([(m.role, _speaker(channel, m.role, m.author_id, m.text, lead.kind)) for m in stored])
    llm = rt.loaded.config.llm
    person = People.from_config(rt.loaded.config).person_of(last.user_id, lead.platform) or last.user_id
    meter = BudgetMeter(rt, spend_limits.Payer(member.id, run_id, person=person, user_id=last.user_id,
                                               conversation_id=turn.conversation_id), mention=channel.mention)
    try:
        result = await asyncio.wait_for(
            run_turn(
                rt.llm,
                TurnSettings(model=llm.model, max_tokens=llm.max_tokens, max_iterations=llm.max_iterations),
                prompts.system_blocks(member, workspace, datetime.now(UTC), colleagues),
                history,
                [*resolve(member.tools), *builder_tools.for_runtime(rt)],
                ctx,
                meter,
            ),
            timeout=max(10, rt.loaded.config.workers.turn_timeout - 20),
        )
    except OverBudget as exc:  # the call was not made: the answer says which budget and when it resets
        log.info("over budget: %s", exc.scope, extra=extra)
        await spend_tell.warn_admins(rt, member.id, lead.platform, meter.crossed)
        return _with_warnings(str(exc), meter, rt)
    except (LlmUnavailable, TimeoutError) as exc:
        kind = exc.kind if isinstance(exc, LlmUnavailable) else "timeout"
        log.warning("LLM unavailable: %s", kind, extra=extra)
        await _apologise(rt, channel, turn, kind)
        await _quietly(channel.clear_working(_message(last)), extra)
        return None
    log.info("answered in %d round(s), tools=%s", result.iterations, ",".join(result.tool_calls) or "-", extra=extra)
    await spend_tell.warn_admins(rt, member.id, lead.platform, meter.crossed)
    return _with_warnings(result.text, meter, rt)


def _with_warnings(text: str, meter: BudgetMeter, rt: Runtime) -> str:
    """The person's budget warning (once per period) rides on the answer it came with."""
    note = spend_tell.person_warnings(meter.crossed, rt)
    return f"{text}\n\n{note}" if note else text


def _observe_latency(rt: Runtime, event: InboundEvent) -> None:
    if rt.redis is None:
        return
    received = event.received_at
    try:
        capacity.observe_turn(rt.redis, (datetime.now(UTC) - received).total_seconds())
    except Exception:  # noqa: BLE001 - a metric never fails a turn
        log.info("turn latency not recorded", exc_info=True)


async def _finish(rt: Runtime, turn: _Turn, channel: Channel, text: str, reply: MessageRef, *, posted: bool) -> str:
    """One transaction: the post is done, its messages answered, the reply in the history.
    The next turn of the conversation cannot start before this commits (it needs the lease)."""
    message_id = reply.message or ""
    async with rt.db.session() as session:
        if posted or turn.reply.status != "done":
            await effects.finish(session, turn.reply.id, {"text": text, "inbound_ids": turn.ids, "ts": message_id})
        if await inbound.mark_answered(session, turn.ids, message_id):  # the flip guards the reply: stored once
            await conversations.add_message(session, turn.conversation_id, "assistant", turn.lead.member_id, text, message_id or None)
    last = turn.last
    await _quietly(channel.clear_working(_message(last)), {"member": last.member_id})
    return f"answered {message_id}"


async def _landed(channel: Channel, turn: _Turn, reply: Effect) -> MessageRef | None:
    """Crash path: an earlier attempt's post, if it landed."""
    try:
        return await channel.find_effect(turn.reply_to, reply.id)
    except ChannelError:
        return None


async def _attempt_failed(rt: Runtime, turn: _Turn, exc: Exception) -> str:
    """Retry what may pass later (RQ's Retry, by re-raising), up to MAX_ATTEMPTS; give up at
    once on what cannot."""
    reason = exc.code if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
    extra = {"run_id": f"turn-{turn.lead.id}", "member": turn.lead.member_id}
    if not is_permanent(exc) and turn.attempt < MAX_ATTEMPTS:
        log.warning("turn attempt %d failed (%s); it will be retried", turn.attempt, reason, extra=extra)
        async with rt.db.session() as session:
            await inbound.note_error(session, turn.ids, reason)
        turn.retrying.update(turn.ids)
        raise exc
    log.warning("giving up on a message after %d attempt(s): %s", turn.attempt, reason, extra=extra)
    await _give_up(rt, turn, reason, channel_gone=is_permanent(exc))
    return f"failed: {reason}"


async def _give_up(rt: Runtime, turn: _Turn, reason: str, *, channel_gone: bool) -> None:
    """`failed` with its reason, a line in the activity feed, and a word to the person: in the
    conversation if it still works, else privately (a DM)."""
    lead = turn.lead
    async with rt.db.session() as session:
        await inbound.mark_failed(session, turn.ids, reason)
        await activity.record(
            session,
            member_id=lead.member_id,
            actor_type="member",
            actor_id=lead.member_id,
            action="message.failed",
            description=f"Could not answer {lead.user_id} in {lead.channel}: {reason}",
            entity_type="inbound",
            entity_id=str(lead.id),
            run_id=f"turn-{lead.id}",
            details={"inbound_ids": turn.ids, "reason": reason, "attempts": turn.attempt},
        )
        note = await effects.begin(session, f"failed-{lead.id}", "notice")
    if note.status == "done":
        return
    try:
        channel = rt.channels(lead.platform, lead.member_id)
    except LookupError:
        return
    code = reason if channel_gone else ""
    where = "" if lead.kind in ("dm", "terminal") else f" in {channel.mention_conversation(lead.channel)}"
    quote = turn.last.text if len(turn.last.text) <= 80 else turn.last.text[:77] + "..."
    text = GAVE_UP.format(where=where, quote=quote, why=_GAVE_UP_WHY.get(code, f"something went wrong on my side ({reason[:200]})"))
    told: MessageRef | None = None
    if not channel_gone:
        try:
            told = await channel.post(turn.reply_to, text, effect_id=note.id)
        except Exception as exc:  # noqa: BLE001 - then try a DM
            log.info("failure notice not posted in the conversation: %s", exc)
    if told is None:
        try:
            told = await channel.notify(turn.last.user_id, text, effect_id=note.id)
        except Exception as exc:  # noqa: BLE001 - nowhere left to tell them; the status says it
            log.warning("could not tell %s that their message failed: %s", turn.last.user_id, exc)
    if told is not None:
        async with rt.db.session() as session:
            await effects.finish(session, note.id, {"ts": told.message})


async def _apologise(rt: Runtime, channel: Channel, turn: _Turn, kind: str) -> None:
    text = APOLOGY.format(why=_WHY.get(kind, "the AI service had an error"))
    lead = turn.lead
    effect_id = f"apology-{lead.id}-{turn.attempt}"
    async with rt.db.session() as session:
        row = await effects.begin(session, effect_id, "apology")
        await inbound.mark_failed(session, turn.ids, kind)
    if row.status == "done":
        return
    posted = await channel.post(
        turn.reply_to,
        text,
        effect_id=effect_id,
        buttons=[Button(RETRY_TURN_ACTION, "Try again", str(turn.last.id), style="primary")],
    )
    async with rt.db.session() as session:
        await effects.finish(session, effect_id, {"ts": posted.message})


async def _history_lines(rt: Runtime, conversation_id: int, limit: int) -> list[HistoryLine]:
    async with rt.db.session() as session:
        rows = await conversations.recent(session, conversation_id, limit)
    return [HistoryLine(role=m.role, author_id=m.author_id, text=m.text, at=m.created_at.isoformat()) for m in rows]


def _speaker(channel: Channel, role: str, author_id: str, text: str, kind: str) -> str:
    """In channel threads several people talk: say who wrote each line."""
    if role == "user" and kind not in ("dm", "terminal"):
        return f"{channel.mention(author_id)}: {text}"
    return text


async def _quietly(call: Any, extra: dict[str, str]) -> None:
    """The working indicator is a nicety: its failure never fails the turn."""
    try:
        await call
    except Exception as exc:  # noqa: BLE001
        log.info("working indicator skipped: %s", exc, extra=extra)
