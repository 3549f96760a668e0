"""Slack event payload -> `InboundMessage`, or None when the member should stay silent.

Only translation lives here; whether a thread reply concerns the member (is it already in the
thread?) and deduplication are decided by the core."""

from __future__ import annotations

from typing import Any

from agents.messages import InboundMessage, MessageKind

# Subtypes that are still a person talking; every other subtype (edits, joins, bot posts,
# deletions...) is not a message to answer.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}


def to_inbound(member_id: str, body: dict[str, Any], bot_user_id: str | None) -> InboundMessage | None:
    event = body.get("event") or {}
    if event.get("bot_id") or event.get("subtype") not in _PERSON_SUBTYPES or event.get("bot_profile"):
        return None
    user = event.get("user")
    channel = event.get("channel")
    ts = event.get("ts")
    if not user or not channel or not ts or user == bot_user_id:
        return None
    text = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    if thread_ts == ts:
        thread_ts = None
    mention = f"<@{bot_user_id}>" if bot_user_id else None
    kind: MessageKind
    if event.get("type") == "app_mention":
        kind = "mention"
    elif event.get("type") == "message":
        if event.get("channel_type") == "im":
            kind = "dm"
        elif mention and mention in text:
            kind = "mention"  # the message.channels twin of an app_mention: same channel + ts
        elif thread_ts:
            kind = "thread"
        else:
            return None
    else:
        return None
    if mention:
        text = " ".join(text.replace(mention, " ").split())
    return InboundMessage(
        member_id=member_id,
        platform="slack",
        event_id=str(body.get("event_id") or f"{channel}-{ts}"),
        kind=kind,
        channel=str(channel),
        ts=str(ts),
        user_id=str(user),
        text=text,
        thread_ts=str(thread_ts) if thread_ts else None,
    )
