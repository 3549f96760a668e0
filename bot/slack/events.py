"""Slack event payload -> `InboundMessage`, or None when the member should stay silent.

Only translation lives here; whether a thread reply concerns the member (is it already in the
thread?) and deduplication are decided by the core."""

from __future__ import annotations

import re
from typing import Any

from agents.messages import (
    HOME_ACTION,
    HOME_TAB,
    InboundAction,
    InboundMessage,
    MessageKind,
    MessageRef,
)

# Subtypes that are still a person talking; every other subtype (edits, joins, bot posts,
# deletions...) is not a message to answer.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}

# What Slack's ids and timestamps look like, within the lengths the inbound row stores (an
# event_id falls back to "<channel>-<ts>", at most 32 + 1 + 21 characters).
_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,8}")
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,64}")


def _storable(text: str) -> bool:
    """Text every database accepts: no NUL (PostgreSQL) and no lone surrogate (not utf-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def to_inbound(member_id: str, body: dict[str, Any], bot_user_id: str | None) -> InboundMessage | None:
    """None also for a message whose fields are not what Slack sends (a user that is not an
    id, a ts that is not a timestamp...): it is acked and ignored, never stored half-usable."""
    event = body.get("event")
    if not isinstance(event, dict):
        return None
    if event.get("bot_id") or event.get("subtype") not in _PERSON_SUBTYPES or event.get("bot_profile"):
        return None
    user = event.get("user")
    channel = event.get("channel")
    ts = event.get("ts")
    if not _matches(_ID, user) or not _matches(_ID, channel) or not _matches(_TS, ts) or user == bot_user_id:
        return None
    raw_text = event.get("text")
    if (raw_text is not None and not isinstance(raw_text, str)) or not _storable(raw_text or ""):
        return None
    text = raw_text or ""
    thread_ts = event.get("thread_ts")
    if thread_ts is not None and not _matches(_TS, thread_ts):
        return None
    event_id = body.get("event_id")
    if event_id is not None and not _matches(_EVENT_ID, event_id):
        return None
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
        event_id=str(event_id or f"{channel}-{ts}"),
        kind=kind,
        where=MessageRef(str(channel), str(ts), str(thread_ts) if thread_ts else None),
        user_id=str(user),
        text=text,
    )


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def home_opened(member_id: str, body: dict[str, Any]) -> InboundAction | None:
    """`app_home_opened` on the Home tab -> publish it for that person (the Messages tab, also
    announced by this event, is not ours to draw)."""
    event = body.get("event")
    if not isinstance(event, dict) or event.get("type") != "app_home_opened" or event.get("tab") != "home":
        return None
    user, event_id = event.get("user"), body.get("event_id")
    if not _matches(_ID, user) or not _matches(_EVENT_ID, event_id):
        return None
    return InboundAction(member_id=member_id, platform="slack", key=f"home:{event_id}", action=HOME_ACTION, object_id=str(user),
                         user_id=str(user), where=HOME_TAB)
