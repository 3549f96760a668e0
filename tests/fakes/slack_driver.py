"""Sends signed requests into the bot's HTTP endpoints, the way Slack does.

Why: the bot must be tested through its real entry point (signature check, retries, Events
API envelopes, slash commands, interactivity payloads), not by calling handlers directly.
Payload shapes follow the real samples in /work/shared/samples/slack/.

The driver is synchronous (urllib). If the bot's server runs on the *same* event loop as an
async test, call it through ``await asyncio.to_thread(driver.dm, ...)`` so the loop can serve
the request.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.slack_api import FakeSlack

__all__ = ["SlackDriver", "new_ts", "rich_text_blocks", "sign"]

Json = dict[str, Any]

_counter = itertools.count(1)
_counter_lock = threading.Lock()
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def _next() -> int:
    with _counter_lock:
        return next(_counter)


_last_us = 0


def new_ts() -> str:
    """A unique message ts in Slack's format ("<seconds>.<6 digits>")."""
    global _last_us
    with _counter_lock:
        us = max(time.time_ns() // 1000, _last_us + 1)  # like Slack: time-ordered, unique
        _last_us = us
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _new_event_id() -> str:
    return f"Ev{_next():04d}{uuid.uuid4().hex[:8].upper()}"


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature headers for `body` (what the bot verifies)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    base = f"v0:{ts}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def rich_text_blocks(text: str) -> list[Json]:
    """The rich_text block a Slack client attaches to a typed message (mentions as user elements)."""
    elements: list[Json] = []
    pos = 0
    for match in _MENTION.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        pos = match.end()
    if pos < len(text) or not elements:
        elements.append({"type": "text", "text": text[pos:]})
    return [
        {
            "type": "rich_text",
            "block_id": uuid.uuid4().hex[:5],
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


class SlackDriver:
    """Plays Slack's side of the HTTP conversation against one member's endpoint."""

    def __init__(
        self,
        url: str,
        signing_secret: str,
        *,
        team_id: str = "T0TEAM001",
        api_app_id: str = "A0APP0001",
        bot_user_id: str | None = None,
        slack: FakeSlack | None = None,
        timeout: float = 15.0,
    ) -> None:
        """`slack`: if given, human/bot messages sent as events are also stored in that fake
        (via add_message) so the bot's history/replies/reactions calls find them."""
        self.url = url
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self.slack = slack
        self.timeout = timeout
        self.last_status: int | None = None
        self.last_body: bytes = b""
        self.last_event_ids: list[str] = []

    # ------------------------------------------------------------------ low level

    def event_envelope(self, event: Json, *, event_id: str | None = None) -> Json:
        """Wrap an event the way the Events API does (event_callback)."""
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or _new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    def build(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        bad_signature: bool = False,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> tuple[bytes, dict[str, str]]:
        """Body + headers of a Slack request (signature, optional retry headers)."""
        secret = self.signing_secret + ("-wrong" if bad_signature else "")
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        headers.update(sign(secret, body, timestamp))
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return body, headers

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST to the endpoint; HTTP errors are returned as (status, body), not raised."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        self.last_status, self.last_body = status, data
        return status, data

    def _post_json(self, payload: Json, **build_kw: Any) -> tuple[int, bytes]:
        body, headers = self.build(json.dumps(payload).encode(), "application/json", **build_kw)
        return self.post(body, headers)

    def _post_form(self, fields: dict[str, str]) -> tuple[int, bytes]:
        body, headers = self.build(
            urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
        )
        return self.post(body, headers)

    # ------------------------------------------------------------------ events

    def send_event(
        self,
        event: Json,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
        retry_num: int | None = None,
    ) -> tuple[int, str]:
        """Deliver one event in an envelope; returns (HTTP status, event_id)."""
        envelope = self.event_envelope(event, event_id=event_id)
        status, _ = self._post_json(
            envelope, timestamp=timestamp, bad_signature=bad_signature, retry_num=retry_num
        )
        self.last_event_ids = [envelope["event_id"]]
        return status, envelope["event_id"]

    def _human_event(
        self,
        event_type: str,
        user: str,
        text: str,
        channel: str,
        ts: str | None,
        thread_ts: str | None,
        channel_type: str | None,
        extra: Json,
    ) -> Json:
        ts = ts or new_ts()
        event: Json = {
            "user": user,
            "type": event_type,
            "ts": ts,
            "client_msg_id": str(uuid.uuid4()),
            "text": text,
            "team": self.team_id,
            "blocks": rich_text_blocks(text),
            "channel": channel,
            "event_ts": ts,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if channel_type is not None:
            event["channel_type"] = channel_type
        event.update(extra)
        return event

    def _mirror(self, event: Json, user: str) -> None:
        if self.slack is not None:
            self.slack.add_message(
                event["channel"],
                user,
                event["text"],
                ts=event["ts"],
                thread_ts=event.get("thread_ts"),
                bot_id=event.get("bot_id"),
                blocks=event.get("blocks"),
            )

    def dm(
        self,
        user: str,
        text: str,
        *,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        event_id: str | None = None,
        **kw: Any,
    ) -> tuple[int, str, str]:
        """A human's DM to the bot (message.im); returns (status, event_id, ts)."""
        event = self._human_event("message", user, text, channel, ts, thread_ts, "im", kw)
        self._mirror(event, user)
        status, eid = self.send_event(event, event_id=event_id)
        return status, eid, event["ts"]

    def channel_message(
        self,
        user: str,
        text: str,
        *,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        event_id: str | None = None,
        **kw: Any,
    ) -> tuple[int, str, str]:
        """A human's message in a public channel (message.channels); returns (status, event_id, ts)."""
        event = self._human_event("message", user, text, channel, ts, thread_ts, "channel", kw)
        self._mirror(event, user)
        status, eid = self.send_event(event, event_id=event_id)
        return status, eid, event["ts"]

    def mention(
        self,
        user: str,
        text: str,
        *,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        event_id: str | None = None,
        also_message_event: bool = True,
        **kw: Any,
    ) -> tuple[list[int], str]:
        """An @mention: app_mention plus (like real Slack) a message.channels event with the same
        channel+ts and a different event_id. Returns ([statuses], ts); ids in last_event_ids."""
        if self.bot_user_id and f"<@{self.bot_user_id}>" not in text:
            text = f"<@{self.bot_user_id}> {text}"
        ts = ts or new_ts()
        mention = self._human_event("app_mention", user, text, channel, ts, thread_ts, None, kw)
        self._mirror(mention, user)
        statuses: list[int] = []
        ids: list[str] = []
        status, eid = self.send_event(mention, event_id=event_id)
        statuses.append(status)
        ids.append(eid)
        if also_message_event:
            message = self._human_event(
                "message", user, text, channel, ts, thread_ts, "channel", kw
            )
            message["client_msg_id"] = mention["client_msg_id"]
            message["blocks"] = mention["blocks"]
            status, eid = self.send_event(message)
            statuses.append(status)
            ids.append(eid)
        self.last_event_ids = ids
        return statuses, ts

    def bot_message(
        self,
        bot_id: str,
        text: str,
        *,
        channel: str,
        channel_type: str = "channel",
        user: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        subtype: str | None = "bot_message",
        **kw: Any,
    ) -> tuple[int, str]:
        """A message posted by a bot (another teammate, an integration, or the bot itself).
        With `user` (the bot's user id) it looks like a modern app post; returns (status, ts)."""
        ts = ts or new_ts()
        event: Json = {"type": "message", "text": text, "ts": ts, "bot_id": bot_id}
        if subtype:
            event["subtype"] = subtype
        if user:
            event["user"] = user
            event["app_id"] = "A" + bot_id[1:]
            event["bot_profile"] = {
                "id": bot_id,
                "deleted": False,
                "name": user,
                "updated": 1700000000,
                "app_id": event["app_id"],
                "icons": {"image_36": "", "image_48": "", "image_72": ""},
                "team_id": self.team_id,
            }
        else:
            event["username"] = kw.pop("username", "integration")
        event.update(
            team=self.team_id,
            blocks=rich_text_blocks(text),
            channel=channel,
            event_ts=ts,
            channel_type=channel_type,
        )
        if thread_ts:
            event["thread_ts"] = thread_ts
        event.update(kw)
        self._mirror(event, user or "")
        status, _ = self.send_event(event)
        return status, ts

    # ------------------------------------------------------------------ interactivity

    def slash_command(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        response_url: str = "",
        trigger_id: str = "",
        user_name: str | None = None,
        channel_name: str | None = None,
    ) -> tuple[int, bytes]:
        """A slash command invocation (form-encoded, like SlashCommandPayload.json)."""
        if channel_name is None:
            channel_name = "directmessage" if channel_id.startswith("D") else channel_id.lower()
        fields = {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake-team",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"{_next()}.{uuid.uuid4().hex[:12]}",
        }
        return self._post_form(fields)

    def block_action(
        self,
        action_id: str,
        value: str,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        block_id: str = "b1",
        container: Json | None = None,
        trigger_id: str = "",
        response_url: str = "",
    ) -> tuple[int, bytes]:
        """A button click (block_actions, form field payload=<json>, like BlockActionPayload.json).
        A container of type "view" produces a Home-tab/modal click (no channel/message)."""
        container = container or {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        payload: Json = {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": user_id.lower(),
                "name": user_id.lower(),
                "team_id": self.team_id,
            },
            "api_app_id": self.api_app_id,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": trigger_id or f"{_next()}.{uuid.uuid4().hex[:12]}",
            "team": {"id": self.team_id, "domain": "fake-team"},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if container.get("type") == "view":
            payload["view"] = {
                "id": container.get("view_id", ""),
                "team_id": self.team_id,
                "type": container.get("view_type", "home"),
                "blocks": [],
                "private_metadata": "",
                "callback_id": "",
                "state": {"values": {}},
                "app_id": self.api_app_id,
                "bot_id": "",
            }
        else:
            payload["channel"] = {"id": channel_id, "name": channel_id.lower()}
            payload["message"] = {
                "type": "message",
                "user": self.bot_user_id or "",
                "ts": message_ts,
                "bot_id": "",
                "app_id": self.api_app_id,
                "text": "",
                "team": self.team_id,
                "blocks": [],
            }
            payload["response_url"] = response_url
        payload["state"] = {"values": {}}
        payload["actions"] = [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": value, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ]
        return self._post_form({"payload": json.dumps(payload)})

    def view_submission(self, view: Json, values: dict[str, str], *, user_id: str) -> tuple[int, bytes]:
        """Submitting a modal the app opened (`view` as views.open returned it), with each
        plain-text input's value by its block and action id (ours: both the input's id)."""
        state = {key: {key: {"type": "plain_text_input", "value": value}} for key, value in values.items()}
        payload: Json = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "fake-team"},
            "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": "fake-verification-token",
            "trigger_id": f"{_next()}.{uuid.uuid4().hex[:12]}",
            "view": {**view, "state": {"values": state}},
            "is_enterprise_install": False,
        }
        return self._post_form({"payload": json.dumps(payload)})

    def url_verification(self, challenge: str) -> tuple[int, bytes]:
        """The handshake Slack sends when the Request URL is configured."""
        payload = {
            "token": "fake-verification-token",
            "challenge": challenge,
            "type": "url_verification",
        }
        return self._post_json(payload)
