"""Slack interaction payloads (`block_actions`, `view_submission`) -> `InboundAction`.

Only translation lives here: who may do what is decided by the core. A payload whose fields
are not what Slack sends gives None (acked, ignored). A form this adapter opened carries the
message it was opened from in its `private_metadata`, so the answer to a submission can be
shown where the click was."""

from __future__ import annotations

import json
import re
from typing import Any

from agents.messages import COMMAND_ACTION, HOME_TAB, Form, InboundAction, MessageRef

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ACTION = re.compile(r"[a-z_.]{1,64}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,8}")
_VALUE_LIMIT = 255
_INPUT_LIMIT = 3000


def from_click(member_id: str, body: dict[str, Any]) -> InboundAction | None:
    """The first action of a `block_actions` payload (our messages carry one per click)."""
    actions = body.get("actions")
    user = (body.get("user") or {}).get("id") if isinstance(body.get("user"), dict) else None
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict) or not _ok(_ID, user):
        return None
    action = actions[0]
    action_id, value, action_ts = action.get("action_id"), action.get("value"), action.get("action_ts")
    if not _ok(_ACTION, action_id) or not isinstance(value, str) or not value or len(value) > _VALUE_LIMIT or not _ok(_TS, action_ts):
        return None
    where = _where(body)
    key = f"click:{user}:{action_ts}:{action_id}:{where.message if where else ''}"
    return InboundAction(member_id=member_id, platform="slack", key=key, action=str(action_id), object_id=value,
                         user_id=str(user), where=where, trigger=_trigger(body))


def from_submission(member_id: str, body: dict[str, Any]) -> InboundAction | None:
    view = body.get("view")
    user = (body.get("user") or {}).get("id") if isinstance(body.get("user"), dict) else None
    if not isinstance(view, dict) or not _ok(_ID, user) or not _ok(_ID, view.get("id")) or not _ok(_ACTION, view.get("callback_id")):
        return None
    try:
        meta = json.loads(view.get("private_metadata") or "")
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str) or not meta["id"] or len(meta["id"]) > _VALUE_LIMIT:
        return None
    where = MessageRef(str(meta["c"]), None, meta.get("t")) if _ok(_ID, meta.get("c")) and (meta.get("t") is None or _ok(_TS, meta.get("t"))) else None
    values: dict[str, str] = {}
    state = (view.get("state") or {}).get("values") or {}
    if isinstance(state, dict):
        for block in state.values():
            if not isinstance(block, dict):
                continue
            for input_id, element in block.items():
                value = element.get("value") if isinstance(element, dict) else None
                if isinstance(input_id, str) and _ok(_ACTION, input_id) and isinstance(value, str):
                    values[input_id] = value[:_INPUT_LIMIT]
    return InboundAction(member_id=member_id, platform="slack", key=f"view:{view['id']}", action=str(view["callback_id"]),
                         object_id=meta["id"], user_id=str(user), where=where, values=values)


def from_command(member_id: str, body: dict[str, Any]) -> InboundAction | None:
    """A slash command (`/nova status`): its text is the object, the conversation it was typed
    in is where the answer goes; `trigger_id` names the delivery (Slack sends a command once)."""
    user, channel, trigger, text = body.get("user_id"), body.get("channel_id"), body.get("trigger_id"), body.get("text") or ""
    if not _ok(_ID, user) or not _ok(_ID, channel) or not isinstance(text, str) or _trigger(body) is None or not isinstance(trigger, str):
        return None
    words = " ".join(text.split())[:_VALUE_LIMIT] or "help"
    return InboundAction(member_id=member_id, platform="slack", key=f"command:{trigger}", action=COMMAND_ACTION, object_id=words,
                         user_id=str(user), where=MessageRef(str(channel)), trigger=trigger)


def form_metadata(form: Form, where: MessageRef | None) -> str:
    """What the modal keeps for its submission: the object, and where the click was."""
    meta: dict[str, Any] = {"id": form.object_id}
    if where is not None:
        meta["c"], meta["t"] = where.conversation, where.thread
    return json.dumps(meta)


def _where(body: dict[str, Any]) -> MessageRef | None:
    container = body.get("container")
    if isinstance(container, dict) and container.get("type") == "view":
        view = body.get("view")
        return HOME_TAB if isinstance(view, dict) and view.get("type") == "home" else None
    if not isinstance(container, dict) or container.get("type") != "message":
        return None
    channel, ts = container.get("channel_id"), container.get("message_ts")
    if not _ok(_ID, channel) or not _ok(_TS, ts):
        return None
    message = body.get("message") if isinstance(body.get("message"), dict) else {}
    thread = message.get("thread_ts") if isinstance(message, dict) else None
    return MessageRef(str(channel), str(ts), str(thread) if _ok(_TS, thread) and thread != ts else None)


def _trigger(body: dict[str, Any]) -> str | None:
    trigger = body.get("trigger_id")
    return trigger if isinstance(trigger, str) and 0 < len(trigger) < 200 else None


def _ok(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None
