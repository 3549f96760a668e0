"""Proves the Slack fakes behave like Slack for the real slack_sdk clients.

Why: every bot test relies on tests/fakes; if the fake drifts from Slack's wire behaviour
(auth, errors, retries, thread shapes, signatures) those tests prove nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import SCOPES, FakeSlack
from tests.fakes.slack_driver import SlackDriver, sign

TOKEN = "xoxb-nova-token"
OTHER = "xoxb-iris-token"
HUMAN = "U0HUMAN01"
NOVA = "U0NOVA001"
IRIS = "U0IRIS001"
CHANNEL = "C0GENERAL"
IM = "D0NOVAIM1"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack().start()
    slack.add_bot(TOKEN, user_id=NOVA, bot_id="B0NOVA001", name="nova")
    slack.add_bot(OTHER, user_id=IRIS, bot_id="B0IRIS001", name="iris")
    slack.add_user(HUMAN, "alice", real_name="Alice Example", email="alice@example.com")
    slack.add_channel(CHANNEL, "general", [HUMAN, NOVA, IRIS])
    slack.add_channel("C0QUIET", "quiet", [HUMAN])
    slack.add_im(IM, HUMAN, NOVA)
    yield slack
    slack.stop()


def client(fake: FakeSlack, token: str = TOKEN, **kw: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.base_url, **kw)


async def test_thread_replies_with_metadata(fake: FakeSlack) -> None:
    web = client(fake)
    parent_ts = fake.add_message(CHANNEL, HUMAN, "can someone check the build?")
    meta = {"event_type": "teammate_reply", "event_payload": {"task": "t-1"}}
    resp = await web.chat_postMessage(
        channel=CHANNEL, text="on it", thread_ts=parent_ts, metadata=meta
    )
    assert resp["ok"] and resp["channel"] == CHANNEL
    assert resp["message"]["thread_ts"] == parent_ts and resp["message"]["bot_id"] == "B0NOVA001"
    assert float(resp["ts"]) > float(parent_ts)

    replies = await web.conversations_replies(
        channel=CHANNEL, ts=parent_ts, include_all_metadata=True
    )
    msgs = replies["messages"]
    assert [m["ts"] for m in msgs] == [parent_ts, resp["ts"]]
    assert msgs[0]["reply_count"] == 1 and msgs[0]["latest_reply"] == resp["ts"]
    assert (
        msgs[1]["metadata"] == meta
        and msgs[1]["user"] == NOVA
        and msgs[1]["parent_user_id"] == HUMAN
    )

    plain = await web.conversations_replies(channel=CHANNEL, ts=parent_ts)
    assert "metadata" not in plain["messages"][1]
    history = await web.conversations_history(channel=CHANNEL)
    assert [m["ts"] for m in history["messages"]] == [parent_ts]  # replies stay in the thread
    assert fake.posts_by(TOKEN)[0]["channel"] == CHANNEL
    assert len(fake.messages(CHANNEL, thread_ts=parent_ts)) == 2


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_errors(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as bad_auth:
        await client(fake, "xoxb-unknown").chat_postMessage(channel=CHANNEL, text="hi")
    assert bad_auth.value.response["error"] == "invalid_auth"
    web = client(fake)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C0MISSING", "text": "x"}, "channel_not_found"),
        ({"channel": "C0QUIET", "text": "x"}, "not_in_channel"),
        ({"channel": CHANNEL}, "no_text"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as err:
            await web.chat_postMessage(**kwargs)
        assert err.value.response["error"] == error
    posted = await web.chat_postMessage(channel=CHANNEL, text="mine")
    with pytest.raises(SlackApiError) as err:
        await client(fake, OTHER).chat_update(channel=CHANNEL, ts=posted["ts"], text="theirs")
    assert err.value.response["error"] == "cant_update_message"
    updated = await web.chat_update(channel=CHANNEL, ts=posted["ts"], text="edited")
    assert updated["text"] == "edited" and fake.posts_by(TOKEN)[0]["text"] == "edited"
    assert fake.calls_to("chat.postMessage")[0]["error"] == "invalid_auth"


async def test_rate_limit_retry_posts_once(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    web = client(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    resp = await web.chat_postMessage(channel=CHANNEL, text="eventually")
    assert resp["ok"]
    assert [c["status"] for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["eventually"]
    assert len(fake.wait_for_posts(1, token=TOKEN, timeout=1)) == 1


async def test_server_errors_and_ok_false_injection(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=503, times=2)
    with pytest.raises(SlackApiError) as err:
        await client(fake).chat_postMessage(channel=CHANNEL, text="down")
    assert err.value.response.status_code == 503
    retrying = client(fake, retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1)])
    assert (await retrying.chat_postMessage(channel=CHANNEL, text="up"))["ok"]
    assert [c["status"] for c in fake.calls_to("chat.postMessage")] == [503, 503, 200]

    fake.fail_next("users.info", error="ratelimited")
    with pytest.raises(SlackApiError) as err:
        await client(fake).users_info(user=HUMAN)
    assert err.value.response.status_code == 200 and err.value.response["error"] == "ratelimited"


async def test_reactions_add_remove(fake: FakeSlack) -> None:
    web = client(fake)
    ts = fake.add_message(IM, HUMAN, "hello nova")
    await web.reactions_add(channel=IM, timestamp=ts, name="eyes")
    assert fake.reactions(IM, ts) == [{"name": "eyes", "users": [NOVA], "count": 1}]
    with pytest.raises(SlackApiError) as err:
        await web.reactions_add(channel=IM, timestamp=ts, name="eyes")
    assert err.value.response["error"] == "already_reacted"
    await web.reactions_remove(channel=IM, timestamp=ts, name="eyes")
    assert fake.reactions(IM, ts) == []
    with pytest.raises(SlackApiError) as err:
        await web.reactions_remove(channel=IM, timestamp=ts, name="eyes")
    assert err.value.response["error"] == "no_reaction"


async def test_users_info_and_auth_test(fake: FakeSlack) -> None:
    web = client(fake)
    user = (await web.users_info(user=HUMAN))["user"]
    assert user["real_name"] == "Alice Example" and user["tz"] == "Europe/Amsterdam"
    assert user["profile"]["email"] == "alice@example.com" and user["is_bot"] is False
    with pytest.raises(SlackApiError) as err:
        await web.users_info(user="U0NOBODY")
    assert err.value.response["error"] == "user_not_found"

    auth = await web.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == (NOVA, "B0NOVA001", fake.team_id)
    assert auth.headers["x-oauth-scopes"] == SCOPES


def test_sync_client_dm_views_and_status(fake: FakeSlack) -> None:
    web = WebClient(token=TOKEN, base_url=fake.base_url)
    assert web.conversations_open(users=HUMAN)["channel"]["id"] == IM
    web.chat_postMessage(channel=IM, text="hi alice", blocks=[{"type": "divider"}])
    assert fake.wait_for_posts(1, token=TOKEN)[0]["blocks"] == [{"type": "divider"}]
    info = web.conversations_info(channel=IM)["channel"]
    assert info["is_im"] and info["user"] == HUMAN and info["is_member"]
    view = web.views_publish(user_id=HUMAN, view={"type": "home", "blocks": []})["view"]
    published = fake.published_view(HUMAN)
    assert published is not None and published["id"] == view["id"]
    web.assistant_threads_setStatus(channel_id=IM, thread_ts="1.000001", status="is thinking...")
    assert fake.statuses()[0]["status"] == "is thinking..."
    with pytest.raises(AssertionError, match="expected >= 1"):
        fake.wait_for_posts(1, token=OTHER, timeout=0.2)


def test_sign_matches_slack_sdk_verifier() -> None:
    body = b'{"type":"event_callback"}'
    now = int(time.time())
    headers = sign("s3cret", body, now)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


class _Recorder(BaseHTTPRequestHandler):
    """Stands in for the bot's endpoint: verifies signatures and records bodies."""

    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers.items())
        type(self).received.append((headers, body))
        ok = SignatureVerifier("s3cret").is_valid_request(body, headers)
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_driver_payload_shapes(fake: FakeSlack) -> None:
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slack/nova/events"
        driver = SlackDriver(url, "s3cret", bot_user_id=NOVA, slack=fake)
        status, event_id, ts = driver.dm(HUMAN, "hello", channel=IM)
        assert status == 200 and event_id.startswith("Ev") and fake.messages(IM)[0]["ts"] == ts
        statuses, _ = driver.mention(HUMAN, "status please", channel=CHANNEL)
        assert statuses == [200, 200]
        assert driver.send_event({"type": "message"}, bad_signature=True)[0] == 401
        assert driver.slash_command("/nova", "help", user_id=HUMAN, channel_id=CHANNEL)[0] == 200
        assert (
            driver.block_action("approve", "yes", user_id=HUMAN, channel_id=CHANNEL, message_ts=ts)[
                0
            ]
            == 200
        )
    finally:
        server.shutdown()
        server.server_close()

    bodies = [body for _, body in _Recorder.received]
    envelope = json.loads(bodies[0])
    assert envelope["type"] == "event_callback" and envelope["authorizations"][0]["user_id"] == NOVA
    assert (
        envelope["event"]["channel_type"] == "im"
        and envelope["event"]["blocks"][0]["type"] == "rich_text"
    )
    app_mention, message = json.loads(bodies[1]), json.loads(bodies[2])
    assert (
        app_mention["event"]["type"] == "app_mention"
        and message["event"]["channel_type"] == "channel"
    )
    assert app_mention["event_id"] != message["event_id"]
    assert app_mention["event"]["ts"] == message["event"]["ts"]
    assert f"<@{NOVA}>" in app_mention["event"]["text"]
    slash = urllib.parse.parse_qs(bodies[4].decode())
    assert slash["command"] == ["/nova"] and slash["user_id"] == [HUMAN]
    action = json.loads(urllib.parse.parse_qs(bodies[5].decode())["payload"][0])
    assert action["type"] == "block_actions" and action["actions"][0]["action_id"] == "approve"
    assert action["container"]["message_ts"] == ts


async def test_bolt_app_end_to_end(fake: FakeSlack) -> None:
    """slack_bolt (auth.test + scopes header, signature check, say()) works against both fakes."""
    from aiohttp import web
    from slack_bolt.async_app import AsyncApp

    bolt = AsyncApp(client=client(fake), signing_secret="s3cret")

    @bolt.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        await say(text=f"echo: {event['text']}", thread_ts=event["ts"])

    runner = web.AppRunner(bolt.web_app(path="/slack/nova/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        driver = SlackDriver(
            f"http://127.0.0.1:{port}/slack/nova/events", "s3cret", bot_user_id=NOVA, slack=fake
        )
        status, _, ts = await asyncio.to_thread(driver.dm, HUMAN, "ping", channel=IM)
        assert status == 200
        posts = await asyncio.to_thread(fake.wait_for_posts, 1, TOKEN, 5.0)
        assert posts[0]["text"] == "echo: ping" and posts[0]["thread_ts"] == ts
        assert [m["ts"] for m in fake.messages(IM, thread_ts=ts)] == [ts, posts[0]["ts"]]
        assert (
            await asyncio.to_thread(driver.send_event, {"type": "message"}, bad_signature=True)
        )[0] == 401
        assert [c["method"] for c in fake.calls][:2] == ["auth.test", "chat.postMessage"]
    finally:
        await runner.cleanup()


async def test_socket_mode_hello_events_acks_and_reconnect(fake: FakeSlack) -> None:
    """slack_sdk's aiohttp SocketModeClient opens a connection with the xapp- token, gets
    envelopes (payload = the Events API body), acks them, and reconnects on `disconnect`."""
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest
    from slack_sdk.socket_mode.response import SocketModeResponse

    app_token = "xapp-1-nova"
    fake.add_app_token(app_token, bot_token=TOKEN)
    with pytest.raises(SlackApiError) as err:
        await client(fake).apps_connections_open(app_token=TOKEN)
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:
        await client(fake, token=app_token).auth_test()
    assert err.value.response["error"] == "not_allowed_token_type"

    received: list[SocketModeRequest] = []
    hellos: list[dict[str, Any]] = []

    async def on_request(sm: Any, req: SocketModeRequest) -> None:
        received.append(req)
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    async def on_message(_sm: Any, message: dict[str, Any], _raw: str | None) -> None:
        if message.get("type") == "hello":
            hellos.append(message)

    sm = SocketModeClient(app_token=app_token, web_client=client(fake), ping_interval=1)
    sm.socket_mode_request_listeners.append(on_request)
    sm.message_listeners.append(on_message)
    assert not fake.socket_connected(app_token)
    try:
        await sm.connect()
        await asyncio.to_thread(fake.wait_socket, app_token, 5)
        event = {"type": "message", "channel": IM, "user": HUMAN, "text": "hi", "ts": "1.000001"}
        envelope_id = await asyncio.to_thread(
            fake.send_socket_event, app_token, event, event_id="Ev0SOCKET1"
        )
        ack = await asyncio.to_thread(fake.wait_socket_ack, app_token, envelope_id, 5)
        assert ack == {"envelope_id": envelope_id}
        [req] = received
        assert req.type == "events_api" and req.retry_attempt == 0 and req.retry_reason == ""
        assert req.payload["type"] == "event_callback" and req.payload["event_id"] == "Ev0SOCKET1"
        assert req.payload["event"] == event
        assert req.payload["authorizations"][0]["user_id"] == NOVA
        assert hellos and hellos[0]["connection_info"]["app_id"] == "A0NOVA001"

        retry_id = await asyncio.to_thread(
            fake.send_socket_event, app_token, event, event_id="Ev0SOCKET1", retry_attempt=1
        )
        await asyncio.to_thread(fake.wait_socket_ack, app_token, retry_id, 5)
        assert received[1].retry_attempt == 1 and received[1].retry_reason == "timeout"
        assert fake.socket_acks(app_token) == [envelope_id, retry_id]

        # Slack's "disconnect" makes the client open a fresh connection; events keep flowing.
        await asyncio.to_thread(fake.send_socket_disconnect, app_token)
        await asyncio.to_thread(fake.wait_socket, app_token, 5, connections=2)
        opens = [c for c in fake.calls_to("apps.connections.open") if c["token"] == app_token]
        assert len(opens) == 2 and fake.socket_connections(app_token) == 2
        third = await asyncio.to_thread(fake.send_socket_event, app_token, event)
        await asyncio.to_thread(fake.wait_socket_ack, app_token, third, 5)
    finally:
        await sm.close()
    from tests.conftest import wait_until

    await asyncio.to_thread(
        wait_until, lambda: not fake.socket_connected(app_token), 5, "socket closed"
    )
