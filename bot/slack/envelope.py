"""Screen a Slack HTTP request before Bolt sees it: signature first, then the envelope's shape.

Bolt parses the body while it builds the request (before its own signature check) and reads
the envelope's ids with `.get` and `in` on whatever it finds, so a signed but malformed payload
(deep JSON, bad utf-8, a list where an object belongs) raised inside Bolt and answered 500 —
and Slack retries a 5xx event, for ever the same. `screen` answers such a request itself:

- 401 when the signature or its timestamp is missing, stale or wrong (checked on the raw
  bytes, before anything is decoded or parsed, so an unsigned request learns nothing more);
- 400 when the body cannot be understood: not utf-8, not JSON / form, nested deeper than
  `MAX_DEPTH`, or an envelope whose ids and containers Bolt reads have the wrong type.

Only the shape is checked here, with the same content-type rules Bolt uses to parse; what an
event *means* is `bot.slack.events`' job, which ignores (200) a well-formed event it cannot
use. The invariant: a request `screen` lets through can be parsed and routed by Bolt without
raising, so the only 5xx left on this path is the durable hand-off failing (Slack retries).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

# Slack's own payloads nest about a dozen levels (a view's blocks in a block_actions payload);
# 64 leaves room and stays far below the interpreter's recursion limit for every later walk.
MAX_DEPTH = 64
# How old a signed request may be (Slack's guidance, and Bolt's own check).
MAX_AGE_SECONDS = 5 * 60

# Keys Bolt turns into context ids: a string, or an object carrying "id" (team, user...).
_ID_OR_OBJECT = ("enterprise", "team", "user", "channel")
# Keys Bolt reads as plain values, compares or hashes: a string (or absent / null).
_STRINGS = (
    "type", "subtype", "enterprise_id", "team_id", "user_id", "channel_id", "thread_ts", "user_team",
    "bot_id", "channel_type", "callback_id", "action_id", "command", "function_execution_id",
    "bot_access_token", "response_url", "trigger_id", "event_id", "ts", "tab", "api_app_id",
    "context_team_id", "context_enterprise_id",
)
# Keys Bolt descends into: an object (or absent / null).
_OBJECTS = ("event", "view", "message", "previous_message", "item", "assistant_thread", "function_data", "workflow_step")
# Where Bolt looks for those keys: the body itself and these objects below it.
_NESTED = ("event", "message", "previous_message", "item", "assistant_thread")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class Rejection:
    """The answer to give instead of dispatching: an HTTP status and a one-line reason."""

    status: int
    reason: str


class Malformed(ValueError):
    """The body is signed but cannot be understood (answered 400)."""


def screen(raw: bytes, headers: Mapping[str, str], signing_secret: str, *, now: float | None = None) -> Rejection | None:
    """None when Bolt may dispatch `raw`; otherwise the rejection to answer with."""
    if not signature_ok(raw, headers, signing_secret, now=now):
        return Rejection(401, "invalid request")
    try:
        check_envelope(parse(raw, headers.get("Content-Type")))
    except Malformed as exc:
        return Rejection(400, f"malformed payload: {exc}")
    return None


def signature_ok(raw: bytes, headers: Mapping[str, str], signing_secret: str, *, now: float | None = None) -> bool:
    """Slack's v0 signature over the raw bytes, with a fresh timestamp."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE_SECONDS:
        return False
    digest = hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}".encode(), signature.encode("utf-8", "replace"))


def parse(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as Bolt will see it (same rules as `slack_bolt.request.internals.parse_body`):
    JSON when the content type says so or it starts with "{", else a form, whose `payload`
    field (interactions) is JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("body is not utf-8") from None
    if not text:
        return {}
    if (content_type or "").split(";")[0].strip() == "application/json" or text.startswith("{"):
        return _json_object(text)
    if "payload" in text:  # Bolt's own test: an interaction's form carries payload=<json>
        payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
        return {} if payload is None else _json_object(payload)
    return dict(parse_qsl(text, keep_blank_values=True))


def _json_object(text: str) -> dict[str, Any]:
    # Measure the nesting before json.loads recurses into it: past ~1,000 levels the parser
    # raises RecursionError, and well below that every later walk (Bolt's, ours) pays for it.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed("not valid JSON") from None
    if not isinstance(value, dict):
        raise Malformed("not a JSON object")
    return value


def _depth(text: str) -> int:
    """The deepest bracket nesting outside JSON strings (a lower bound for invalid JSON)."""
    depth = deepest = 0
    for char in _NOT_BRACKETS.sub("", _STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_envelope(body: dict[str, Any]) -> None:
    """Raise `Malformed` unless Bolt can route `body`: the ids it extracts have the types it
    expects at every level it looks, and each payload type carries what its matcher indexes."""
    _check_level(body, "")
    for key in _NESTED:
        if isinstance(body.get(key), dict):
            _check_level(body[key], f"{key}.")
            for inner in _NESTED:
                if isinstance(body[key].get(inner), dict):
                    _check_level(body[key][inner], f"{key}.{inner}.")
    authorizations = body.get("authorizations")
    if authorizations is not None:
        if not isinstance(authorizations, list) or not all(isinstance(a, dict) for a in authorizations):
            raise Malformed("authorizations must be a list of objects")
        if authorizations:
            _check_level(authorizations[0], "authorizations[0].")
    response_urls = body.get("response_urls")
    if response_urls is not None and (not isinstance(response_urls, list) or not all(isinstance(u, dict) for u in response_urls)):
        raise Malformed("response_urls must be a list of objects")
    if body.get("is_ext_shared_channel") is True and not isinstance(body.get("event", {}), dict):
        raise Malformed("event must be an object")
    kind = body.get("type")
    if kind == "event_callback" and (not isinstance(body.get("event"), dict) or not isinstance(body["event"].get("type"), str)):
        raise Malformed("an event_callback needs an event object with a type")
    if kind in ("block_actions", "interactive_message") and "actions" in body:
        actions = body["actions"]
        if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
            raise Malformed("actions must be a non-empty list of objects")
        for action in actions:
            _check_level(action, "actions[].")
    if kind in ("view_submission", "view_closed") and "view" in body and not isinstance(body["view"], dict):
        raise Malformed("view must be an object")


def _check_level(obj: dict[str, Any], where: str) -> None:
    for key in _ID_OR_OBJECT:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, dict) or not isinstance(value.get("id", ""), str | None):
            raise Malformed(f"{where}{key} must be an id or an object with a string id")
    for key in _STRINGS:
        if not isinstance(obj.get(key), str | None):
            raise Malformed(f"{where}{key} must be a string")
    for key in _OBJECTS:
        if not isinstance(obj.get(key), dict | None):
            raise Malformed(f"{where}{key} must be an object")
