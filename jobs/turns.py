"""The turn job: answer one inbound message as the member it was addressed to.

Invariants a reader must not break:
- The user's message is stored once (unique on the inbound event), however often this runs.
- The reply is an effect: its row is written `started` with the text before posting and
  `done` after. A retry that finds `done` only finishes the bookkeeping; one that finds
  `started` first asks the channel whether that post landed (crash path only).
- A failed LLM call posts a short apology with a "Try again" button and leaves the message
  `failed`, still in the conversation, so nothing the person wrote is lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import prompts
from agents.channels import Channel, ChannelError
from agents.messages import RETRY_TURN_ACTION, Button
from agents.tools.context import HistoryLine, ToolContext
from agents.tools.registry import resolve
from agents.turns import LlmUnavailable, TurnSettings, Usage, history_to_messages, run_turn
from jobs import capacity, loop
from jobs.runtime import Runtime, current
from storage import conversations, effects, inbound, members, usage
from storage.models import Effect, InboundEvent, Message

log = logging.getLogger(__name__)

HISTORY_LIMIT = 40
APOLOGY = "Sorry, I can't reach my brain right now ({why}). Your message is saved: press *Try again* or just write again in a minute."
_WHY = {"rate_limited": "too many requests", "timeout": "it took too long", "unreachable": "the AI service is unreachable"}


def answer_job(inbound_id: int) -> str:
    """RQ entry point (sync, runs on the worker's persistent loop)."""
    return loop.run(answer(current(), inbound_id))


async def answer(rt: Runtime, inbound_id: int) -> str:
    """Answer the message; returns a short outcome for the job result and logs."""
    async with rt.db.session() as session:
        event = await inbound.get(session, inbound_id)
        if event is None:
            raise LookupError(f"inbound message {inbound_id} not found")
        if event.status == "answered":
            return "already answered"
        attempt = event.attempts + 1
        if not await inbound.claim(session, inbound_id, timedelta(seconds=rt.loaded.config.workers.turn_timeout)):
            return "being answered by another worker"
        member = await members.profile(session, event.member_id)
        workspace = await members.workspace(session)
        colleagues = await members.profiles(session)
        thread_key = event.thread_ts or ("" if event.kind in ("dm", "terminal") else event.ts)
        conversation = await conversations.get_or_create(
            session, event.member_id, event.platform, event.channel, thread_key, event.user_id if event.kind == "dm" else None
        )
        await conversations.add_message(
            session, conversation.id, "user", event.user_id, event.text, event.ts, inbound_event_id=event.id
        )
        reply = await effects.begin(session, f"reply-{inbound_id}", "reply")
    if member is None:
        raise LookupError(f"member {event.member_id} not found")
    run_id = f"turn-{inbound_id}-{attempt}"
    extra = {"run_id": run_id, "member": member.id}
    channel = rt.channels(event.platform, event.member_id)
    reply_thread = event.thread_ts if event.kind in ("dm", "terminal") else (event.thread_ts or event.ts)

    if reply.status == "done" or (reply.result.get("text") and await _landed(rt, channel, event, reply_thread, reply)):
        return await _finish(rt, event, conversation.id, reply.result.get("text", ""), reply.id, channel, reply_thread)

    await _quietly(channel.set_working(event.channel, event.ts, reply_thread), extra)
    ctx = ToolContext(
        member=member,
        channel=channel,
        conversation_channel=event.channel,
        thread_ts=reply_thread,
        user_id=event.user_id,
        run_id=run_id,
        history=lambda limit: _history_lines(rt, conversation.id, limit),
    )
    try:
        async with rt.db.session() as session:
            stored = await conversations.recent(session, conversation.id, HISTORY_LIMIT)
        history = history_to_messages(
            [(m.role, _speaker(m.role, m.author_id, m.text, event.kind)) for m in _as_of(stored, event.ts)]
        )
        llm = rt.loaded.config.llm
        result = await asyncio.wait_for(
            run_turn(
                rt.llm,
                TurnSettings(model=llm.model, max_tokens=llm.max_tokens, max_iterations=llm.max_iterations),
                prompts.system_blocks(member, workspace, datetime.now(UTC), colleagues),
                history,
                resolve(member.tools),
                ctx,
                lambda u: _record_usage(rt, u, member.id, event.user_id, conversation.id, run_id),
            ),
            timeout=max(10, rt.loaded.config.workers.turn_timeout - 20),
        )
    except (LlmUnavailable, TimeoutError) as exc:
        kind = exc.kind if isinstance(exc, LlmUnavailable) else "timeout"
        log.warning("LLM unavailable: %s", kind, extra=extra)
        await _apologise(rt, channel, event, reply_thread, kind, attempt)
        await _quietly(channel.clear_working(event.channel, event.ts, reply_thread), extra)
        return f"apologised ({kind})"

    async with rt.db.session() as session:
        await effects.remember_intent(session, reply.id, {"text": result.text})
    ts = await channel.post(event.channel, result.text, thread_ts=reply_thread, effect_id=reply.id)
    async with rt.db.session() as session:
        await effects.finish(session, reply.id, {"text": result.text, "ts": ts})
    log.info("answered in %d round(s), tools=%s", result.iterations, ",".join(result.tool_calls) or "-", extra=extra)
    _observe_latency(rt, event)
    return await _finish(rt, event, conversation.id, result.text, reply.id, channel, reply_thread)


def _observe_latency(rt: Runtime, event: InboundEvent) -> None:
    if rt.redis is None:
        return
    received = event.received_at
    try:
        capacity.observe_turn(rt.redis, (datetime.now(UTC) - received).total_seconds())
    except Exception:  # noqa: BLE001 - a metric never fails a turn
        log.info("turn latency not recorded", exc_info=True)


async def _finish(rt: Runtime, event: InboundEvent, conversation_id: int, text: str, effect_id: str, channel: Channel, reply_thread: str | None) -> str:
    async with rt.db.session() as session:
        done = await effects.get(session, effect_id)
        ts = str(done.result.get("ts", "")) if done else ""
        if await inbound.mark_answered(session, event.id, ts):  # the flip guards the message: stored once
            await conversations.add_message(session, conversation_id, "assistant", event.member_id, text, ts or None)
    await _quietly(channel.clear_working(event.channel, event.ts, reply_thread), {"member": event.member_id})
    return f"answered {ts}"


async def _landed(rt: Runtime, channel: Channel, event: InboundEvent, reply_thread: str | None, reply: Effect) -> bool:
    """Crash path: did an earlier attempt's post land? If so, record it as done."""
    try:
        ts = await channel.find_effect(event.channel, reply_thread, reply.id)
    except ChannelError:
        return False
    if ts is None:
        return False
    async with rt.db.session() as session:
        await effects.finish(session, reply.id, {**reply.result, "ts": ts})
    return True


async def _apologise(rt: Runtime, channel: Channel, event: InboundEvent, reply_thread: str | None, kind: str, attempt: int) -> None:
    text = APOLOGY.format(why=_WHY.get(kind, "the AI service had an error"))
    effect_id = f"apology-{event.id}-{attempt}"
    async with rt.db.session() as session:
        row = await effects.begin(session, effect_id, "apology")
        await inbound.mark_failed(session, event.id, kind)
    if row.status == "done":
        return
    ts = await channel.post(
        event.channel,
        text,
        thread_ts=reply_thread,
        effect_id=effect_id,
        buttons=[Button(RETRY_TURN_ACTION, "Try again", str(event.id), style="primary")],
    )
    async with rt.db.session() as session:
        await effects.finish(session, effect_id, {"ts": ts})


async def _record_usage(rt: Runtime, u: Usage, member_id: str, user_id: str, conversation_id: int, run_id: str) -> None:
    async with rt.db.session() as session:
        await usage.record(
            session,
            member_id=member_id,
            user_id=user_id,
            conversation_id=conversation_id,
            run_id=run_id,
            model=u.model,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
        )


async def _history_lines(rt: Runtime, conversation_id: int, limit: int) -> list[HistoryLine]:
    async with rt.db.session() as session:
        rows = await conversations.recent(session, conversation_id, limit)
    return [HistoryLine(role=m.role, author_id=m.author_id, text=m.text, at=m.created_at.isoformat()) for m in rows]


def _as_of(messages: list[Message], ts: str) -> list[Message]:
    """The conversation as it stood when the person sent message `ts`, in platform order.

    Several messages of one conversation can be answered at once (two quick DMs, several
    people in a thread); each turn sees what came before its own message, and nothing after
    it, so the history always ends with the message being answered."""

    def at(message: Message) -> float:
        try:
            return float(message.platform_ts) if message.platform_ts else 0.0
        except ValueError:
            return 0.0

    cutoff = float(ts)
    return sorted((m for m in messages if at(m) <= cutoff), key=lambda m: (at(m), m.id))


def _speaker(role: str, author_id: str, text: str, kind: str) -> str:
    """In channel threads several people talk: say who wrote each line."""
    if role == "user" and kind not in ("dm", "terminal"):
        return f"<@{author_id}>: {text}"
    return text


async def _quietly(call: Any, extra: dict[str, str]) -> None:
    """The working indicator is a nicety: its failure never fails the turn."""
    try:
        await call
    except Exception as exc:  # noqa: BLE001
        log.info("working indicator skipped: %s", exc, extra=extra)
