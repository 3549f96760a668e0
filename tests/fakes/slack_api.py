"""A stateful fake of the Slack Web API, served over real HTTP.

Why: the bot talks to Slack only through the real ``slack_sdk`` clients (sync ``WebClient``,
``AsyncWebClient``, and slack_bolt on top of them). Pointing their ``base_url`` at this server
exercises the real request/response/retry code paths, while the fake keeps enough state
(channels, threads, reactions, views) for tests to assert on what the bot did, and lets tests
inject rate limits and outages.

Socket Mode: ``add_app_token`` registers an app-level (xapp-) token for a bot;
``apps.connections.open`` with it returns a ``ws://`` URL on this same server, where a
websocket greets the client with ``hello``, takes envelopes from ``send_socket_event`` and
records the acks (``{"envelope_id": ...}``) the client sends back.

App manifests: ``add_config_token`` registers an app configuration token;
``apps.manifest.create`` with it checks the manifest against Slack's published schema (and the
rules Slack adds, ``tests/fakes/manifest_schema.py``), answers ``invalid_manifest`` with an
``errors`` list as Slack does, or creates the app (``created_apps``).

The server runs in its own thread with its own event loop, so it can be used from sync tests,
async tests (without blocking their loop) and from other processes over HTTP. Every public
method is synchronous and guarded by one lock.

Usage::

    fake = FakeSlack().start()
    fake.add_bot("xoxb-nova", user_id="U0NOVA", bot_id="B0NOVA", name="nova")
    client = AsyncWebClient(token="xoxb-nova", base_url=fake.base_url)
    ...
    fake.stop()

Socket Mode::

    fake.add_app_token("xapp-1-nova", bot_token="xoxb-nova")
    ...  # the app connects (slack_sdk SocketModeClient / Bolt's AsyncSocketModeHandler)
    fake.wait_socket("xapp-1-nova")
    envelope_id = fake.send_socket_event("xapp-1-nova", {"type": "message", ...})
    fake.wait_socket_ack("xapp-1-nova", envelope_id)
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes import manifest_schema

__all__ = ["FakeSlack", "SCOPES"]

log = logging.getLogger(__name__)

Json = dict[str, Any]

#: Scopes reported in the ``x-oauth-scopes`` header (slack_bolt reads it after auth.test;
#: `teammates check` compares them with what the member's manifest asks for). ``set_scopes``
#: grants a bot fewer, as an app installed from an older manifest has.
SCOPES = (
    "chat:write,im:history,channels:history,app_mentions:read,users:read,reactions:write,"
    "im:write,commands,channels:read,groups:read,im:read,groups:history,usergroups:read,users:read.email"
)

# Keys kept on stored messages for test assertions but never returned by the API.
_PRIVATE_KEYS = frozenset(
    {
        "channel",
        "unfurl_links",
        "unfurl_media",
        "reply_broadcast",
        "icon_emoji",
        "icon_url",
        "mrkdwn",
    }
)
_THREAD_KEYS = (
    "reply_count",
    "reply_users",
    "reply_users_count",
    "latest_reply",
    "subscribed",
    "is_locked",
)
_MAX_TEXT = 40_000


class _ApiError(Exception):
    """A Slack-level failure: HTTP 200 with ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _Bot:
    token: str
    user_id: str
    bot_id: str
    name: str
    app_id: str
    scopes: str = SCOPES


@dataclass
class _Channel:
    id: str
    name: str
    members: list[str]
    is_im: bool = False
    is_private: bool = False
    user: str | None = None  # the human side of an IM
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Failure:
    status: int
    error: str | None
    retry_after: int | None
    body: str | None = None  # sent as-is instead of Slack's JSON (a proxy's error page)


_RAW = "\x00raw_body"  # payload key carrying a _Failure.body through _process to _handle


def _truthy(value: Any) -> bool:
    """Slack accepts booleans as true/false/1/0 (slack_sdk sends "1"/"0" in forms)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _maybe_json(value: Any, error: str) -> Any:
    """Form-encoded calls send blocks/metadata/view as JSON strings, JSON calls as objects."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError(error) from None
    return value


def _required(params: Json, key: str, error: str = "invalid_arguments") -> str:
    value = params.get(key)
    if value is None or value == "":
        raise _ApiError(error)
    return str(value)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _ts_key(ts: str) -> tuple[int, int]:
    """Sort key for Slack timestamps ("1700000000.000100"), exact unlike float()."""
    sec, _, frac = str(ts).partition(".")
    try:
        return int(sec or 0), int((frac or "0")[:6].ljust(6, "0"))
    except ValueError:
        return (0, 0)


def _ts_us(ts: str) -> int:
    sec, frac = _ts_key(ts)
    return sec * 1_000_000 + frac


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"fake:{offset}".encode()).decode()


def _paginate(items: list[Any], params: Json, default_limit: int = 100) -> tuple[list[Any], str]:
    """Cursor pagination like Slack's: opaque base64 cursor, empty next_cursor at the end."""
    limit = _int(params.get("limit"), default_limit)
    if limit <= 0:
        limit = default_limit
    limit = min(limit, 1000)
    offset = 0
    cursor = params.get("cursor")
    if cursor:
        try:
            prefix, _, num = base64.b64decode(str(cursor)).decode().partition(":")
            if prefix != "fake":
                raise ValueError(cursor)
            offset = int(num)
        except ValueError:
            raise _ApiError("invalid_cursor") from None
    end = offset + limit
    return items[offset:end], (_encode_cursor(end) if end < len(items) else "")


def _validate_blocks(blocks: Any) -> list[Json]:
    """Reject block payloads real Slack would reject (catches bot bugs early)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise _ApiError("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not block.get("type"):
            raise _ApiError("invalid_blocks")
        text = block.get("text")
        if isinstance(text, dict):
            limit = {"section": 3000, "header": 150}.get(block["type"])
            if limit is not None and len(str(text.get("text", ""))) > limit:
                raise _ApiError("invalid_blocks")
    return blocks


def _parse_metadata(value: Any) -> Json | None:
    meta = _maybe_json(value, "invalid_metadata_format")
    if meta is None:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("event_type"), str):
        raise _ApiError("invalid_metadata_format")
    payload = meta.get("event_payload", {})
    if not isinstance(payload, dict):
        raise _ApiError("invalid_metadata_format")
    return {"event_type": meta["event_type"], "event_payload": payload}


class FakeSlack:
    """In-memory Slack workspace + Web API server for tests (see module docstring)."""

    team_id: str = "T0TEAM001"
    team_name: str = "Fake Team"
    team_domain: str = "fake-team"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._bots: dict[str, _Bot] = {}
        self._users: dict[str, Json] = {}
        self._channels: dict[str, _Channel] = {}
        self._msgs: dict[str, list[Json]] = {}
        self._posts: list[tuple[str, Json]] = []
        self._ephemerals: list[Json] = []
        self._statuses: list[Json] = []
        self._views: dict[str, Json] = {}
        self._home_views: dict[str, str] = {}
        self._groups: dict[str, list[str]] = {}  # user group id -> user ids
        self._calls: list[Json] = []
        self._failures: dict[str, deque[_Failure]] = {}
        self._channel_failures: dict[str, str] = {}  # channel id -> error for every call on it
        self._delay = 0.0
        self._next_delays: dict[str, deque[float]] = {}  # method -> one-shot delays, after the call took effect
        self._read_limit: int | None = None  # cap on history/replies pages (Tier 1: 15)
        self._after: dict[str, deque[Callable[[], None]]] = {}  # method -> one-shot actions after a call
        self._method_delays: dict[str, float] = {}
        self._app_tokens: dict[str, str] = {}  # xapp- token -> bot (xoxb-) token
        self._config_tokens: dict[str, bool] = {}  # app configuration token -> still valid
        self._created_apps: list[Json] = []  # {"app_id", "manifest", "credentials"}
        self._socket_urls: dict[str, str] = {}  # socket id in the ws:// URL -> xapp- token
        self._sockets: dict[str, list[web.WebSocketResponse]] = {}  # xapp- token -> open sockets
        self._socket_acks: dict[str, list[Json]] = {}  # xapp- token -> ack messages received
        self._socket_connects: dict[str, int] = {}  # xapp- token -> websocket connections so far
        self._last_us = 0
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.base_url = ""
        self._handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "conversations.list": self._conversations_list,
            "conversations.join": self._conversations_join,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "bots.info": self._bots_info,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "assistant.threads.setStatus": self._assistant_set_status,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        """Bind a free port and serve from a background thread; returns self for chaining."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/api/"
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"FakeSlack:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeSlack server did not start within 10s")
        if errors:
            self._thread = None
            raise RuntimeError("FakeSlack server failed to start") from errors[0]
        return self

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_get("/socket/{sid}", self._socket)
        app.on_shutdown.append(self._close_sockets)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        """Stop the server and join its thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ workspace setup

    def add_bot(
        self, token: str, user_id: str, bot_id: str, name: str, app_id: str | None = None
    ) -> None:
        """Register a bot (one Slack app install): its xoxb token, bot user and bot id."""
        if not token.startswith("xoxb-"):
            raise ValueError(f"bot tokens start with xoxb-: {token!r}")
        if app_id is None:
            app_id = "A" + bot_id[1:] if bot_id.startswith("B") else "A" + bot_id
        with self._lock:
            self._bots[token] = _Bot(token, user_id, bot_id, name, app_id)
            self._users[user_id] = {
                "id": user_id,
                "name": name,
                "real_name": name,
                "email": None,
                "tz": "America/Los_Angeles",
                "is_bot": True,
                "bot_id": bot_id,
                "app_id": app_id,
            }

    def set_scopes(self, token: str, scopes: str) -> None:
        """The scopes a bot's install granted (comma-separated, as Slack's header has them)."""
        with self._lock:
            self._bots[token].scopes = scopes

    def add_app_token(self, token: str, bot_token: str) -> None:
        """Register an app-level token (Socket Mode) for the app of an already added bot."""
        if not token.startswith("xapp-"):
            raise ValueError(f"app-level tokens start with xapp-: {token!r}")
        with self._lock:
            if bot_token not in self._bots:
                raise KeyError(f"unknown bot token {bot_token!r}; add_bot first")
            self._app_tokens[token] = bot_token
            self._sockets.setdefault(token, [])
            self._socket_acks.setdefault(token, [])
            self._socket_connects.setdefault(token, 0)

    def add_config_token(self, token: str, *, expired: bool = False) -> None:
        """Register an app configuration token (for apps.manifest.create); an expired one is
        answered ``token_expired``, as Slack does after its 12 hours."""
        with self._lock:
            self._config_tokens[token] = not expired

    def created_apps(self) -> list[Json]:
        """Apps created with apps.manifest.create: {"app_id", "manifest", "credentials"}."""
        with self._lock:
            return copy.deepcopy(self._created_apps)

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        email: str | None = None,
        tz: str = "Europe/Amsterdam",
        is_bot: bool = False,
        is_admin: bool = False,
    ) -> None:
        """Register a workspace member (human unless is_bot; a workspace admin with is_admin)."""
        with self._lock:
            self._users[user_id] = {
                "id": user_id,
                "name": name,
                "real_name": real_name if real_name is not None else name,
                "email": email,
                "tz": tz,
                "is_bot": is_bot,
                "is_admin": is_admin,
            }

    def add_channel(
        self, channel_id: str, name: str, members: list[str], *, is_private: bool = False
    ) -> None:
        """Create a channel (public unless is_private); members are user ids, bots by user id."""
        with self._lock:
            self._channels[channel_id] = _Channel(
                channel_id, name, list(members), is_private=is_private
            )
            self._msgs.setdefault(channel_id, [])

    def add_group(self, group_id: str, user_ids: list[str]) -> None:
        """A user group (Slack's `subteam`, id S…) and its members."""
        with self._lock:
            self._groups[group_id] = list(user_ids)

    def add_im(self, channel_id: str, user_id: str, bot_user_id: str) -> None:
        """Create the DM channel between a human and a bot user."""
        with self._lock:
            self._channels[channel_id] = _Channel(
                channel_id, "", [user_id, bot_user_id], is_im=True, is_private=True, user=user_id
            )
            self._msgs.setdefault(channel_id, [])

    def add_member(self, channel_id: str, user_id: str) -> None:
        """Add a user/bot user to an existing channel (e.g. to recover from not_in_channel)."""
        with self._lock:
            members = self._channels[channel_id].members
            if user_id not in members:
                members.append(user_id)

    def add_message(
        self,
        channel: str,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        bot_id: str | None = None,
        blocks: list[Json] | None = None,
    ) -> str:
        """Put a message (by a human, or a bot if bot_id) into Slack's history; returns its ts."""
        with self._cond:
            if channel not in self._channels:
                raise KeyError(f"unknown channel {channel!r}; add_channel/add_im first")
            if ts is None:
                ts = self._next_ts()
            else:
                self._last_us = max(self._last_us, _ts_us(ts))
            msg: Json = {"type": "message", "text": text, "ts": ts, "team": self.team_id}
            if user:
                msg["user"] = user
            if bot_id is not None:
                msg["bot_id"] = bot_id
            else:
                msg["client_msg_id"] = str(uuid.uuid4())
            msg["blocks"] = blocks if blocks is not None else [_rich_text_block(text)]
            if thread_ts and thread_ts != ts:
                msg["thread_ts"] = thread_ts
            msg["channel"] = channel
            self._insert(channel, msg)
            self._cond.notify_all()
            return ts

    def set_delay(self, seconds: float) -> None:
        """Add latency to every response (to exercise timeouts / concurrency)."""
        with self._lock:
            self._delay = max(0.0, float(seconds))

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Answer the next `times` calls of `method` only after `seconds`, although they take
        effect at once (a post lands, then its answer is late: the caller may time out)."""
        with self._lock:
            self._next_delays.setdefault(method, deque()).extend([float(seconds)] * times)

    def after_next(self, method: str, action: Callable[[], None]) -> None:
        """Run `action` right after the next call of `method` took effect, before anyone else
        is served (e.g. the channel moves on the moment a post lands)."""
        with self._lock:
            self._after.setdefault(method, deque()).append(action)

    def set_read_limit(self, limit: int | None) -> None:
        """Cap the page size of conversations.history/replies, like Slack's Tier 1 limits for
        apps outside the Marketplace (at most 15 messages a page, whatever `limit` asks)."""
        with self._lock:
            self._read_limit = limit
    def delay_method(self, method: str, seconds: float) -> None:
        """Answer `method` (e.g. "chat.postMessage") `seconds` after it took effect: the post is
        visible in the channel before its poster hears back."""
        with self._lock:
            self._method_delays[method] = max(0.0, float(seconds))

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        body: str | None = None,
    ) -> None:
        """Make the next `times` calls of `method` fail (429+Retry-After, 5xx, or ok:false).
        `body`: answer with this text instead of JSON (as a proxy or captive portal would)."""
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            for _ in range(times):
                queue.append(_Failure(status, error, retry_after, body))

    def fail_channel(self, channel: str, error: str | None = "channel_not_found") -> None:
        """Every call naming `channel` fails with ok:false `error` until called with None
        (the channel was deleted, archived, or the bot removed from it)."""
        with self._lock:
            if error is None:
                self._channel_failures.pop(channel, None)
            else:
                self._channel_failures[channel] = error

    # ------------------------------------------------------------------ inspection

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Json]:
        """Copies of a channel's messages oldest first (replies included); or one thread."""
        with self._lock:
            msgs = self._msgs.get(channel, [])
            if thread_ts is not None:
                msgs = [m for m in msgs if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
            return copy.deepcopy(msgs)

    def posts_by(self, token: str) -> list[Json]:
        """Messages posted with chat.postMessage by `token`, in order, in their current state."""
        with self._lock:
            return copy.deepcopy([m for t, m in self._posts if t == token])

    def all_posts(self) -> list[Json]:
        """Every chat.postMessage post by any bot, in order (each has "token" too)."""
        with self._lock:
            return [dict(copy.deepcopy(m), token=t) for t, m in self._posts]

    def wait_for_posts(self, n: int, token: str | None = None, timeout: float = 30.0) -> list[Json]:
        """Block until at least n posts (by token, if given) exist; assert with context otherwise."""

        def matching() -> list[Json]:
            return [m for t, m in self._posts if token is None or t == token]

        with self._cond:
            self._cond.wait_for(lambda: len(matching()) >= n, timeout)
            posts = copy.deepcopy(matching())
            if len(posts) >= n:
                return posts
            recent = [
                f"{c['method']}({c['token']})->{c['status']}{' ' + c['error'] if c['error'] else ''}"
                for c in self._calls[-15:]
            ]
        who = f" by {token}" if token else ""
        texts = [(p["channel"], p.get("text", "")[:80]) for p in posts]
        raise AssertionError(
            f"expected >= {n} chat.postMessage posts{who} within {timeout}s, got {len(posts)}: "
            f"{texts}; last API calls: {recent}"
        )

    def reactions(self, channel: str, ts: str) -> list[Json]:
        """Current reactions on a message: [{"name", "users", "count"}]."""
        with self._lock:
            msg = self._find(channel, ts)
            return copy.deepcopy(msg.get("reactions", [])) if msg else []

    def ephemerals(self, channel: str) -> list[Json]:
        """Ephemeral messages sent to a channel (they never appear in history)."""
        with self._lock:
            return copy.deepcopy([e for e in self._ephemerals if e["channel"] == channel])

    def statuses(self) -> list[Json]:
        """assistant.threads.setStatus calls: {"channel_id", "thread_ts", "status", "token"}."""
        with self._lock:
            return copy.deepcopy(self._statuses)

    def published_view(self, user_id: str) -> Json | None:
        """The App Home view currently published for a user, if any."""
        with self._lock:
            view_id = self._home_views.get(user_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def views(self) -> list[Json]:
        """All views (home tabs and modals) in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    @property
    def calls(self) -> list[Json]:
        """Every API call so far: {"method", "token", "params", "status", "error"}."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def calls_to(self, method: str) -> list[Json]:
        """Calls of one API method, in order."""
        with self._lock:
            return copy.deepcopy([c for c in self._calls if c["method"] == method])

    # ------------------------------------------------------------------ Socket Mode

    def socket_connected(self, app_token: str) -> bool:
        """Whether at least one websocket of this app-level token is open."""
        with self._lock:
            return any(not ws.closed for ws in self._sockets.get(app_token, []))

    def socket_connections(self, app_token: str) -> int:
        """How many websocket connections this app-level token has made so far (reconnects too)."""
        with self._lock:
            return self._socket_connects.get(app_token, 0)

    def wait_socket(self, app_token: str, timeout: float = 15.0, *, connections: int = 1) -> None:
        """Block until the app has an open websocket (and made >= `connections` in total)."""

        def ready() -> bool:
            return (
                self.socket_connected(app_token)
                and self._socket_connects.get(app_token, 0) >= connections
            )

        with self._cond:
            if self._cond.wait_for(ready, timeout):
                return
            opens = [
                f"{c['status']}{' ' + c['error'] if c['error'] else ''}"
                for c in self._calls
                if c["method"] == "apps.connections.open" and c["token"] == app_token
            ]
        raise AssertionError(
            f"no Socket Mode connection for {app_token} within {timeout}s "
            f"(apps.connections.open calls: {opens or 'none'})"
        )

    def send_socket_event(
        self,
        app_token: str,
        event: Json,
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str | None = None,
    ) -> str:
        """Deliver an Events API event over the app's websocket; returns the envelope_id.

        The payload is the event_callback body Slack would POST over HTTP; the Socket Mode
        envelope around it carries retry_attempt/retry_reason instead of X-Slack-Retry-*
        headers. Call it from any thread except the fake's own event loop."""
        with self._lock:
            bot_token = self._app_tokens.get(app_token)
            if bot_token is None:
                raise KeyError(f"unknown app-level token {app_token!r}; add_app_token first")
            bot = self._bots[bot_token]
        payload: Json = {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": bot.app_id,
            "event": copy.deepcopy(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": bot.user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }
        if retry_reason is None:
            retry_reason = "timeout" if retry_attempt else ""
        envelope: Json = {
            "envelope_id": str(uuid.uuid4()),
            "payload": payload,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self._socket_call(self._socket_send(app_token, envelope))
        return str(envelope["envelope_id"])

    def send_socket_disconnect(self, app_token: str, reason: str = "refresh_requested") -> None:
        """Send Slack's ``disconnect`` message (the client should open a new connection)."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-applink"},
        }
        self._socket_call(self._socket_send(app_token, message))

    def socket_acks(self, app_token: str) -> list[str]:
        """Envelope ids the app acknowledged over its websockets, in order received."""
        with self._lock:
            return [str(a["envelope_id"]) for a in self._socket_acks.get(app_token, [])]

    def socket_ack_messages(self, app_token: str) -> list[Json]:
        """The acks themselves ({"envelope_id", and "payload" if the app sent one})."""
        with self._lock:
            return copy.deepcopy(self._socket_acks.get(app_token, []))

    def wait_socket_ack(self, app_token: str, envelope_id: str, timeout: float = 15.0) -> Json:
        """Block until the app acks this envelope; returns the ack message."""

        def ack() -> Json | None:
            for message in self._socket_acks.get(app_token, []):
                if message.get("envelope_id") == envelope_id:
                    return message
            return None

        with self._cond:
            if self._cond.wait_for(lambda: ack() is not None, timeout):
                return copy.deepcopy(ack() or {})
            acked = [a.get("envelope_id") for a in self._socket_acks.get(app_token, [])]
        raise AssertionError(
            f"envelope {envelope_id} not acked on {app_token} within {timeout}s; acked: {acked}"
        )

    def _socket_call(self, coro: Any) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeSlack is not running; start() it first")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

    async def _socket_send(self, app_token: str, message: Json) -> None:
        with self._lock:
            open_sockets = [ws for ws in self._sockets.get(app_token, []) if not ws.closed]
        if not open_sockets:
            raise AssertionError(f"no open Socket Mode connection for {app_token}")
        await open_sockets[-1].send_str(json.dumps(message))  # the newest, like a fresh link

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        """The websocket behind the URL apps.connections.open hands out."""
        with self._lock:
            app_token = self._socket_urls.get(request.match_info["sid"])
            bot = self._bots.get(self._app_tokens.get(app_token or "", ""))
        if app_token is None or bot is None:
            return web.json_response({"ok": False, "error": "invalid_socket_url"}, status=404)
        ws = web.WebSocketResponse(autoping=True)  # answers the client's pings with pongs
        await ws.prepare(request)
        with self._cond:
            self._sockets.setdefault(app_token, []).append(ws)
            self._socket_connects[app_token] = self._socket_connects.get(app_token, 0) + 1
            count = len([s for s in self._sockets[app_token] if not s.closed])
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {
                        "host": "fake-applink",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": bot.app_id},
                }
            )
            with self._cond:
                self._cond.notify_all()
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("FakeSlack: non-JSON Socket Mode message %r", msg.data)
                    continue
                if isinstance(data, dict) and data.get("envelope_id"):
                    with self._cond:
                        self._socket_acks.setdefault(app_token, []).append(data)
                        self._cond.notify_all()
        finally:
            with self._cond:
                sockets = self._sockets.get(app_token, [])
                if ws in sockets:
                    sockets.remove(ws)
                self._cond.notify_all()
        return ws

    async def _close_sockets(self, _app: web.Application) -> None:
        with self._lock:
            sockets = [ws for group in self._sockets.values() for ws in group]
        for ws in sockets:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    def _apps_connections_open(self, app_token: str) -> Json:
        sid = uuid.uuid4().hex
        self._socket_urls[sid] = app_token
        return {"url": f"ws://127.0.0.1:{self.port}/socket/{sid}"}

    def _apps_manifest_create(self, token: str | None, params: Json) -> Json:
        """Shaped like Slack's answer (samples/slack/api/apps.manifest.create.json)."""
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token in self._bots or token in self._app_tokens:
            return {"ok": False, "error": "not_allowed_token_type"}
        if token not in self._config_tokens:
            return {"ok": False, "error": "invalid_auth"}
        if not self._config_tokens[token]:
            return {"ok": False, "error": "token_expired"}
        raw = params.get("manifest")
        if raw is None:
            return {"ok": False, "error": "invalid_arguments"}
        try:
            manifest = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return {"ok": False, "error": "invalid_manifest",
                    "errors": [{"message": "The manifest is not valid JSON", "pointer": "/"}]}
        errors = manifest_schema.problems(manifest)
        if errors:
            return {"ok": False, "error": "invalid_manifest", "errors": errors}
        app_id = self._next_id("A")
        client_id = f"{int(time.time())}.{len(self._created_apps) + 1:06d}"
        credentials = {"client_id": client_id, "client_secret": uuid.uuid4().hex,
                       "verification_token": uuid.uuid4().hex[:24], "signing_secret": uuid.uuid4().hex}
        self._created_apps.append({"app_id": app_id, "manifest": copy.deepcopy(manifest), "credentials": dict(credentials)})
        scopes = ",".join(manifest.get("oauth_config", {}).get("scopes", {}).get("bot", []))
        return {"ok": True, "app_id": app_id, "credentials": credentials,
                "oauth_authorize_url": f"https://slack.com/oauth/v2/authorize?client_id={client_id}&scope={scopes}"}

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: Json = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    params[key] = (
                        value
                        if isinstance(value, str)
                        else f"<file {getattr(value, 'filename', '')}>"
                    )
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        body_token = params.pop("token", None)
        if not token and body_token:
            token = str(body_token)
        status, headers, payload = self._process(method, token, params)
        with self._lock:
            pending = self._next_delays.get(method)
            delay = self._delay + self._method_delays.get(method, 0.0) + (pending.popleft() if pending else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if _RAW in payload:
            return web.Response(text=payload[_RAW], status=status, headers=headers, content_type="application/json")
        return web.json_response(payload, status=status, headers=headers)

    def _process(
        self, method: str, token: str | None, params: Json
    ) -> tuple[int, dict[str, str], Json]:
        with self._cond:
            try:
                status, headers, payload = self._dispatch(method, token, params)
                after = self._after.get(method)
                if after:
                    after.popleft()()
            except Exception:  # a bug in the fake: surface it loudly to the client and the log
                log.exception("FakeSlack crashed handling %s", method)
                status, headers = 500, {}
                payload = {
                    "ok": False,
                    "error": "fake_internal_error",
                    "detail": traceback.format_exc(),
                }
            self._calls.append(
                {
                    "method": method,
                    "token": token,
                    "params": copy.deepcopy(params),
                    "status": status,
                    "error": None if payload.get("ok") else payload.get("error"),
                }
            )
            self._cond.notify_all()
            return status, headers, payload

    def _dispatch(
        self, method: str, token: str | None, params: Json
    ) -> tuple[int, dict[str, str], Json]:
        queue = self._failures.get(method)
        if queue:
            fail = queue.popleft()
            headers: dict[str, str] = {}
            if fail.status == 429 or fail.retry_after is not None:
                headers["Retry-After"] = str(
                    fail.retry_after if fail.retry_after is not None else 1
                )
            default = "ratelimited" if fail.status == 429 else "internal_error"
            if fail.body is not None:
                return fail.status, headers, {"ok": False, "error": "non_json_body", _RAW: fail.body}
            return fail.status, headers, {"ok": False, "error": fail.error or default}
        if method == "apps.connections.open":
            if not token:
                return 200, {}, {"ok": False, "error": "not_authed"}
            if token in self._bots:
                return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
            if token not in self._app_tokens:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            return 200, {}, {"ok": True, **self._apps_connections_open(token)}
        if method == "apps.manifest.create":
            return 200, {}, self._apps_manifest_create(token, params)
        handler = self._handlers.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        if not token:
            return 200, {}, {"ok": False, "error": "not_authed"}
        if token in self._app_tokens:
            return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
        bot = self._bots.get(token)
        if bot is None:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        headers = {"x-oauth-scopes": bot.scopes, "x-accepted-oauth-scopes": ""}
        blocked = self._channel_failures.get(str(params.get("channel") or params.get("channel_id") or ""))
        if blocked:
            return 200, headers, {"ok": False, "error": blocked}
        try:
            result = handler(bot, params)
        except _ApiError as exc:
            return 200, headers, {"ok": False, "error": exc.error}
        return 200, headers, {"ok": True, **result}

    # ------------------------------------------------------------------ state helpers

    def _next_ts(self) -> str:
        us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}0FAKE{self._seq:05d}"

    def _find(self, channel: str, ts: str) -> Json | None:
        for msg in self._msgs.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def _insert(self, channel: str, msg: Json) -> None:
        """Insert in ts order and keep the thread parent's reply stats up to date."""
        thread_ts = msg.get("thread_ts")
        if thread_ts:
            parent = self._find(channel, thread_ts)
            if parent is not None and parent.get("thread_ts") not in (None, parent["ts"]):
                thread_ts = msg["thread_ts"] = parent["thread_ts"]  # replying to a reply
                parent = self._find(channel, thread_ts)
            if parent is not None and parent.get("user"):
                msg["parent_user_id"] = parent["user"]
        msgs = self._msgs.setdefault(channel, [])
        key = _ts_key(msg["ts"])
        idx = len(msgs)
        while idx > 0 and _ts_key(msgs[idx - 1]["ts"]) > key:
            idx -= 1
        msgs.insert(idx, msg)
        if thread_ts:
            self._recount_thread(channel, thread_ts)

    def _recount_thread(self, channel: str, thread_ts: str) -> None:
        parent = self._find(channel, thread_ts)
        if parent is None:
            return
        replies = [
            m
            for m in self._msgs[channel]
            if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts
        ]
        if not replies:
            for key in (*_THREAD_KEYS, "thread_ts"):
                parent.pop(key, None)
            return
        users: list[str] = []
        for reply in replies:
            who = reply.get("user") or reply.get("bot_id")
            if who and who not in users:
                users.append(who)
        parent.update(
            thread_ts=thread_ts,
            reply_count=len(replies),
            reply_users=users,
            reply_users_count=len(users),
            latest_reply=replies[-1]["ts"],
            is_locked=False,
            subscribed=False,
        )

    @staticmethod
    def _public(msg: Json, *, include_metadata: bool = True) -> Json:
        out = {k: copy.deepcopy(v) for k, v in msg.items() if k not in _PRIVATE_KEYS}
        if not include_metadata:
            out.pop("metadata", None)
        return out

    def _channel(self, bot: _Bot, channel_id: Any, *, need_member: bool = False) -> _Channel:
        """Resolve a channel as this bot sees it (IMs of other bots / private ones are invisible)."""
        if not channel_id:
            raise _ApiError("channel_not_found")
        ch = self._channels.get(str(channel_id))
        if ch is None:
            raise _ApiError("channel_not_found")
        if ch.is_im or ch.is_private:
            if bot.user_id not in ch.members:
                raise _ApiError("channel_not_found")
        elif need_member and bot.user_id not in ch.members:
            raise _ApiError("not_in_channel")
        return ch

    def _im_for(self, bot: _Bot, user_id: str) -> tuple[_Channel, bool]:
        """Find or create the DM between the bot and a user; returns (channel, existed)."""
        for ch in self._channels.values():
            if ch.is_im and ch.user == user_id and bot.user_id in ch.members:
                return ch, True
        ch = _Channel(
            self._next_id("D"),
            "",
            [user_id, bot.user_id],
            is_im=True,
            is_private=True,
            user=user_id,
        )
        self._channels[ch.id] = ch
        self._msgs.setdefault(ch.id, [])
        return ch, False

    def _bot_profile(self, bot: _Bot) -> Json:
        return {
            "id": bot.bot_id,
            "deleted": False,
            "name": bot.name,
            "updated": 1700000000,
            "app_id": bot.app_id,
            "icons": {
                "image_36": "https://a.slack-edge.com/fake_36.png",
                "image_48": "https://a.slack-edge.com/fake_48.png",
                "image_72": "https://a.slack-edge.com/fake_72.png",
            },
            "team_id": self.team_id,
        }

    def _channel_obj(self, bot: _Bot, ch: _Channel) -> Json:
        if ch.is_im:
            return {
                "id": ch.id,
                "created": ch.created,
                "is_archived": False,
                "is_channel": False,
                "is_group": False,
                "is_im": True,
                "is_mpim": False,
                "is_private": True,
                "is_member": bot.user_id in ch.members,
                "is_org_shared": False,
                "is_user_deleted": False,
                "user": ch.user,
                "is_open": True,
                "priority": 0,
                "context_team_id": self.team_id,
                "updated": ch.created * 1000,
            }
        empty_topic = {"value": "", "creator": "", "last_set": 0}
        return {
            "id": ch.id,
            "name": ch.name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": ch.is_private,
            "created": ch.created,
            "is_archived": False,
            "is_general": False,
            "unlinked": 0,
            "name_normalized": ch.name,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "shared_team_ids": [self.team_id],
            "pending_shared": [],
            "is_pending_ext_shared": False,
            "is_member": bot.user_id in ch.members,
            "creator": "",
            "topic": dict(empty_topic),
            "purpose": dict(empty_topic),
            "previous_names": [],
            "num_members": len(ch.members),
            "context_team_id": self.team_id,
            "updated": ch.created * 1000,
        }

    def _user_obj(self, user: Json) -> Json:
        tz = user.get("tz") or "UTC"
        try:
            now = datetime.now(ZoneInfo(tz))
            delta = now.utcoffset()
            offset = int(delta.total_seconds()) if delta is not None else 0
            label = now.tzname() or tz
        except (ZoneInfoNotFoundError, ValueError):
            offset, label = 0, tz
        profile: Json = {
            "real_name": user["real_name"],
            "real_name_normalized": user["real_name"],
            "display_name": user["name"],
            "display_name_normalized": user["name"],
            "first_name": user["real_name"].split(" ")[0],
            "last_name": " ".join(user["real_name"].split(" ")[1:]),
            "title": "",
            "status_text": "",
            "status_emoji": "",
            "image_72": "https://a.slack-edge.com/fake_72.png",
            "team": self.team_id,
        }
        if user.get("email"):
            profile["email"] = user["email"]
        if user.get("bot_id"):
            profile.update(
                bot_id=user["bot_id"], api_app_id=user.get("app_id", ""), always_active=False
            )
        return {
            "id": user["id"],
            "team_id": self.team_id,
            "name": user["name"],
            "deleted": False,
            "color": "9f69e7",
            "real_name": user["real_name"],
            "tz": tz,
            "tz_label": label,
            "tz_offset": offset,
            "profile": profile,
            "is_admin": bool(user.get("is_admin")),
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": bool(user.get("is_bot")),
            "is_app_user": False,
            "updated": 1700000000,
            "is_email_confirmed": bool(user.get("email")),
        }

    # ------------------------------------------------------------------ API methods

    def _auth_test(self, bot: _Bot, params: Json) -> Json:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": bot.name,
            "team_id": self.team_id,
            "user_id": bot.user_id,
            "bot_id": bot.bot_id,
            "is_enterprise_install": False,
        }

    def _message_content(self, params: Json, *, require: bool = True) -> Json:
        """Parse text/blocks/attachments/metadata the way Slack validates them."""
        content: Json = {}
        text = params.get("text")
        if text is not None:
            content["text"] = str(text)
            if len(content["text"]) > _MAX_TEXT:
                raise _ApiError("msg_too_long")
        blocks = _maybe_json(params.get("blocks"), "invalid_blocks_format")
        if blocks is not None:
            content["blocks"] = _validate_blocks(blocks)
        attachments = _maybe_json(params.get("attachments"), "invalid_attachments")
        if attachments is not None:
            content["attachments"] = attachments
        if require and not content.get("text") and not content.get("blocks") and not attachments:
            raise _ApiError("no_text")
        metadata = _parse_metadata(params.get("metadata"))
        if metadata is not None:
            content["metadata"] = metadata
        return content

    def _chat_post_message(self, bot: _Bot, params: Json) -> Json:
        target = params.get("channel")
        if target in self._users and target not in self._channels:
            ch, _ = self._im_for(bot, str(target))  # posting to a user id opens the DM
        else:
            ch = self._channel(bot, target, need_member=True)
        content = self._message_content(params)
        ts = self._next_ts()
        msg: Json = {
            "user": bot.user_id,
            "type": "message",
            "ts": ts,
            "bot_id": bot.bot_id,
            "app_id": bot.app_id,
            "text": content.pop("text", ""),
            "team": self.team_id,
            "bot_profile": self._bot_profile(bot),
            **content,
        }
        thread_ts = params.get("thread_ts")
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
            if _truthy(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
                msg["reply_broadcast"] = True
        for key in ("unfurl_links", "unfurl_media", "mrkdwn"):
            if key in params:
                msg[key] = _truthy(params[key])
        for key in ("username", "icon_emoji", "icon_url"):
            if params.get(key):
                msg[key] = str(params[key])
        msg["channel"] = ch.id
        self._insert(ch.id, msg)
        self._posts.append((bot.token, msg))
        return {"channel": ch.id, "ts": ts, "message": self._public(msg)}

    def _own_message(self, bot: _Bot, params: Json, not_own: str) -> tuple[_Channel, Json]:
        ch = self._channel(bot, params.get("channel"))
        msg = self._find(ch.id, _required(params, "ts", "message_not_found"))
        if msg is None:
            raise _ApiError("message_not_found")
        if msg.get("bot_id") != bot.bot_id:
            raise _ApiError(not_own)
        return ch, msg

    def _chat_update(self, bot: _Bot, params: Json) -> Json:
        ch, msg = self._own_message(bot, params, "cant_update_message")
        content = self._message_content(params)
        msg.update(content)
        if "text" not in content and "blocks" in content:
            msg["text"] = ""
        msg["edited"] = {"user": bot.user_id, "ts": self._next_ts()}
        public = self._public(msg)
        return {"channel": ch.id, "ts": msg["ts"], "text": msg.get("text", ""), "message": public}

    def _chat_delete(self, bot: _Bot, params: Json) -> Json:
        ch, msg = self._own_message(bot, params, "cant_delete_message")
        self._msgs[ch.id].remove(msg)
        if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
            self._recount_thread(ch.id, msg["thread_ts"])
        return {"channel": ch.id, "ts": msg["ts"]}

    def _chat_post_ephemeral(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"), need_member=True)
        user = _required(params, "user", "user_not_found")
        if user not in self._users:
            raise _ApiError("user_not_found")
        if user not in ch.members:
            raise _ApiError("user_not_in_channel")
        content = self._message_content(params)
        ts = self._next_ts()
        eph: Json = {
            "channel": ch.id,
            "user": user,
            "ts": ts,
            "bot_id": bot.bot_id,
            "token": bot.token,
        }
        eph["text"] = content.pop("text", "")
        eph.update(content)
        if params.get("thread_ts"):
            eph["thread_ts"] = str(params["thread_ts"])
        self._ephemerals.append(eph)
        return {"message_ts": ts}

    def _chat_get_permalink(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"))
        ts = _required(params, "message_ts", "message_not_found")
        if self._find(ch.id, ts) is None:
            raise _ApiError("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{ch.id}/p{ts.replace('.', '')}"
        return {"channel": ch.id, "permalink": link}

    def _conversations_open(self, bot: _Bot, params: Json) -> Json:
        if params.get("channel"):
            ch = self._channel(bot, params["channel"])
            return {"no_op": True, "already_open": True, "channel": self._channel_obj(bot, ch)}
        users = params.get("users")
        if isinstance(users, list):
            users = ",".join(users)
        ids = [u.strip() for u in str(users or "").split(",") if u.strip()]
        if not ids:
            raise _ApiError("users_list_not_supplied")
        if len(ids) > 1:
            raise _ApiError("not_supported_by_fake")  # group DMs (mpim) are not modelled
        if ids[0] not in self._users:
            raise _ApiError("user_not_found")
        ch, existed = self._im_for(bot, ids[0])
        out: Json = {
            "channel": self._channel_obj(bot, ch)
            if _truthy(params.get("return_im"))
            else {"id": ch.id}
        }
        if existed:
            out.update(no_op=True, already_open=True)
        return out

    def _time_window(self, msgs: list[Json], params: Json) -> list[Json]:
        inclusive = _truthy(params.get("inclusive"))
        oldest = _ts_key(str(params["oldest"])) if params.get("oldest") else None
        latest = _ts_key(str(params["latest"])) if params.get("latest") else None
        out = []
        for msg in msgs:
            key = _ts_key(msg["ts"])
            if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
                continue
            if latest is not None and (key > latest or (key == latest and not inclusive)):
                continue
            out.append(msg)
        return out

    def _read_capped(self, params: Json) -> Json:
        if self._read_limit is None:
            return params
        return {**params, "limit": min(_int(params.get("limit"), self._read_limit) or self._read_limit, self._read_limit)}

    def _conversations_history(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"), need_member=True)
        top = [
            m
            for m in self._msgs[ch.id]
            if not m.get("thread_ts")
            or m["thread_ts"] == m["ts"]
            or m.get("subtype") == "thread_broadcast"
        ]
        window = list(reversed(self._time_window(top, params)))
        page, cursor = _paginate(window, self._read_capped(params))
        meta = _truthy(params.get("include_all_metadata"))
        return {
            "messages": [self._public(m, include_metadata=meta) for m in page],
            "has_more": bool(cursor),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": cursor},
        }

    def _conversations_replies(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"), need_member=True)
        ts = _required(params, "ts", "thread_not_found")
        anchor = self._find(ch.id, ts)
        if anchor is not None and anchor.get("thread_ts"):
            ts = anchor["thread_ts"]  # asking with a reply's ts returns the whole thread
        parent = self._find(ch.id, ts)
        replies = [m for m in self._msgs[ch.id] if m.get("thread_ts") == ts and m["ts"] != ts]
        if parent is None and not replies:
            raise _ApiError("thread_not_found")
        thread = ([parent] if parent is not None else []) + replies
        window = self._time_window(thread, params)
        page, cursor = _paginate(window, self._read_capped(params), default_limit=1000)
        meta = _truthy(params.get("include_all_metadata"))
        return {
            "messages": [self._public(m, include_metadata=meta) for m in page],
            "has_more": bool(cursor),
            "response_metadata": {"next_cursor": cursor},
        }

    def _conversations_info(self, bot: _Bot, params: Json) -> Json:
        return {"channel": self._channel_obj(bot, self._channel(bot, params.get("channel")))}

    def _conversations_members(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"))
        page, cursor = _paginate(list(ch.members), params)
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _conversations_list(self, bot: _Bot, params: Json) -> Json:
        types = {t.strip() for t in str(params.get("types") or "public_channel").split(",")}
        visible = []
        for ch in self._channels.values():
            kind = "im" if ch.is_im else "private_channel" if ch.is_private else "public_channel"
            if kind not in types:
                continue
            if kind != "public_channel" and bot.user_id not in ch.members:
                continue
            visible.append(self._channel_obj(bot, ch))
        page, cursor = _paginate(visible, params)
        return {"channels": page, "response_metadata": {"next_cursor": cursor}}

    def _conversations_join(self, bot: _Bot, params: Json) -> Json:
        ch = self._channel(bot, params.get("channel"))
        if ch.is_im:
            raise _ApiError("method_not_supported_for_channel_type")
        if bot.user_id not in ch.members:
            ch.members.append(bot.user_id)
        return {"channel": self._channel_obj(bot, ch)}

    def _usergroups_users_list(self, bot: _Bot, params: Json) -> Json:
        group = str(params.get("usergroup") or "")
        if group not in self._groups:
            raise _ApiError("no_such_subteam")
        return {"users": list(self._groups[group])}

    def _users_info(self, bot: _Bot, params: Json) -> Json:
        user = self._users.get(str(params.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        obj = self._user_obj(user)
        if _truthy(params.get("include_locale")):
            obj["locale"] = "en-US"
        return {"user": obj}

    def _users_list(self, bot: _Bot, params: Json) -> Json:
        page, cursor = _paginate([self._user_obj(u) for u in self._users.values()], params, 200)
        return {
            "members": page,
            "cache_ts": int(time.time()),
            "response_metadata": {"next_cursor": cursor},
        }

    def _users_lookup_by_email(self, bot: _Bot, params: Json) -> Json:
        email = str(params.get("email") or "").lower()
        for user in self._users.values():
            if email and (user.get("email") or "").lower() == email:
                return {"user": self._user_obj(user)}
        raise _ApiError("users_not_found")

    def _bots_info(self, bot: _Bot, params: Json) -> Json:
        for other in self._bots.values():
            if other.bot_id == params.get("bot"):
                info = self._bot_profile(other)
                info["user_id"] = other.user_id
                return {"bot": info}
        raise _ApiError("bot_not_found")

    def _view_obj(self, bot: _Bot, view: Json, view_id: str, previous: Json | None) -> Json:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type"),
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": previous["root_view_id"] if previous else view_id,
            "previous_view_id": None,
            "app_id": bot.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": bot.bot_id,
        }

    def _parse_view(self, params: Json) -> Json:
        view = _maybe_json(params.get("view"), "invalid_arguments")
        if not isinstance(view, dict) or not view.get("type"):
            raise _ApiError("invalid_arguments")
        blocks = view.get("blocks", [])
        if not isinstance(blocks, list) or len(blocks) > 100:
            raise _ApiError("invalid_arguments")
        return view

    def _check_external_id(self, view: Json, keep_id: str | None = None) -> None:
        ext = view.get("external_id")
        if ext and any(
            v["external_id"] == ext and v["id"] != keep_id for v in self._views.values()
        ):
            raise _ApiError("duplicate_external_id")

    def _views_publish(self, bot: _Bot, params: Json) -> Json:
        user_id = _required(params, "user_id", "user_not_found")
        if user_id not in self._users:
            raise _ApiError("user_not_found")
        view = self._parse_view(params)
        if view["type"] != "home":
            raise _ApiError("invalid_arguments")
        view_id = self._home_views.get(user_id)
        previous = self._views.get(view_id) if view_id else None
        if previous and params.get("hash") and params["hash"] != previous["hash"]:
            raise _ApiError("hash_conflict")
        view_id = view_id or self._next_id("V")
        self._check_external_id(view, view_id)
        obj = self._view_obj(bot, view, view_id, previous)
        obj["user_id"] = user_id
        self._views[view_id] = obj
        self._home_views[user_id] = view_id
        return {"view": copy.deepcopy(obj)}

    def _views_open(self, bot: _Bot, params: Json) -> Json:
        _required(params, "trigger_id")
        view = self._parse_view(params)
        if view["type"] != "modal":
            raise _ApiError("invalid_arguments")
        self._check_external_id(view)
        view_id = self._next_id("V")
        obj = self._view_obj(bot, view, view_id, None)
        obj["trigger_id"] = str(params["trigger_id"])
        self._views[view_id] = obj
        return {"view": copy.deepcopy(obj)}

    def _views_update(self, bot: _Bot, params: Json) -> Json:
        previous: Json | None = None
        if params.get("view_id"):
            previous = self._views.get(str(params["view_id"]))
        elif params.get("external_id"):
            previous = next(
                (v for v in self._views.values() if v["external_id"] == params["external_id"]), None
            )
        else:
            raise _ApiError("invalid_arguments")
        if previous is None:
            raise _ApiError("not_found")
        if params.get("hash") and params["hash"] != previous["hash"]:
            raise _ApiError("hash_conflict")
        view = self._parse_view(params)
        self._check_external_id(view, previous["id"])
        obj = self._view_obj(bot, view, previous["id"], previous)
        for key in ("user_id", "trigger_id"):
            if key in previous:
                obj[key] = previous[key]
        self._views[previous["id"]] = obj
        return {"view": copy.deepcopy(obj)}

    def _reaction_target(self, bot: _Bot, params: Json) -> tuple[Json, str]:
        ch = self._channel(bot, params.get("channel"))
        msg = self._find(ch.id, _required(params, "timestamp", "no_item_specified"))
        if msg is None:
            raise _ApiError("message_not_found")
        name = _required(params, "name", "invalid_name").strip(":")
        return msg, name

    def _reactions_add(self, bot: _Bot, params: Json) -> Json:
        msg, name = self._reaction_target(bot, params)
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        if bot.user_id in entry["users"]:
            raise _ApiError("already_reacted")
        entry["users"].append(bot.user_id)
        entry["count"] = len(entry["users"])
        return {}

    def _reactions_remove(self, bot: _Bot, params: Json) -> Json:
        msg, name = self._reaction_target(bot, params)
        reactions = msg.get("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None or bot.user_id not in entry["users"]:
            raise _ApiError("no_reaction")
        entry["users"].remove(bot.user_id)
        entry["count"] = len(entry["users"])
        if not entry["users"]:
            reactions.remove(entry)
        if not reactions:
            msg.pop("reactions", None)
        return {}

    def _assistant_set_status(self, bot: _Bot, params: Json) -> Json:
        channel_id = _required(params, "channel_id", "channel_not_found")
        thread_ts = _required(params, "thread_ts")
        self._statuses.append(
            {
                "channel_id": channel_id,
                "thread_ts": thread_ts,
                "status": str(params.get("status") or ""),
                "token": bot.token,
            }
        )
        return {}


def _rich_text_block(text: str) -> Json:
    """The rich_text block Slack clients attach to human messages."""
    return {
        "type": "rich_text",
        "block_id": uuid.uuid4().hex[:5],
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }
