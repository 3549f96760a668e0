"""Conversations and their messages: the memory a member's prompts are built from."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Conversation, Message, utcnow


async def get_or_create(session: AsyncSession, member_id: str, platform: str, channel: str, thread_key: str, user_id: str | None) -> Conversation:
    key = {"member_id": member_id, "platform": platform, "channel": channel, "thread_key": thread_key}
    await insert_or_ignore(session, Conversation, {**key, "user_id": user_id})
    row = await find(session, member_id, platform, channel, thread_key)
    assert row is not None
    return row


async def find(session: AsyncSession, member_id: str, platform: str, channel: str, thread_key: str) -> Conversation | None:
    return (
        await session.execute(
            select(Conversation).where(
                Conversation.member_id == member_id,
                Conversation.platform == platform,
                Conversation.channel == channel,
                Conversation.thread_key == thread_key,
            )
        )
    ).scalar_one_or_none()


async def add_message(
    session: AsyncSession,
    conversation_id: int,
    role: str,
    author_id: str,
    text: str,
    platform_ts: str | None = None,
    inbound_event_id: int | None = None,
) -> None:
    """Append a message; a user message is stored once per inbound event, however often a
    turn is retried."""
    values = {
        "conversation_id": conversation_id,
        "role": role,
        "author_id": author_id,
        "text": text,
        "platform_ts": platform_ts,
        "inbound_event_id": inbound_event_id,
    }
    if inbound_event_id is not None:
        await insert_or_ignore(session, Message, values)
    else:
        session.add(Message(**values))
        await session.flush()


async def recent(session: AsyncSession, conversation_id: int, limit: int) -> list[Message]:
    """The latest `limit` messages, oldest first."""
    rows = await session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id.desc()).limit(limit)
    )
    return list(reversed(list(rows.scalars())))


async def take_turn(session: AsyncSession, conversation_id: int, holder: str, lease: timedelta) -> bool:
    """Become the one turn answering this conversation, until `lease` runs out.

    One conditional UPDATE decides it on every database (PostgreSQL re-checks the condition
    after a concurrent writer commits; SQLite has one writer at a time), so two workers in
    two processes never both win. A holder that died loses the conversation when its lease
    runs out."""
    now = utcnow()
    result = await session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            or_(Conversation.turn_lease_until.is_(None), Conversation.turn_lease_until < now, Conversation.turn_holder == holder),
        )
        .values(turn_holder=holder, turn_lease_until=now + lease)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_turn(session: AsyncSession, conversation_id: int, holder: str) -> None:
    """Let the next turn of the conversation start (only the holder can)."""
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.turn_holder == holder)
        .values(turn_holder=None, turn_lease_until=None)
    )
