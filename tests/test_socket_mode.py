"""A member with an app-level token (`slack.app_token: xapp-...`) gets its events over Socket
Mode: `teammates serve` opens the websocket, acks each envelope after the durable hand-off,
and the worker answers, with Slack's redeliveries answered only once, as over HTTP."""

from __future__ import annotations

import uuid

from tests.conftest import ANA, CONFIG, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_driver import new_ts, rich_text_blocks

APP_TOKEN = "xapp-1-nova"


def socket_mode_stack(stack: Stack) -> Stack:
    """The standard stack, with Nova also given an app-level token."""
    bot_line = "      bot_token: ${NOVA_SLACK_BOT_TOKEN}\n"
    assert CONFIG.count(bot_line) == 1
    config = CONFIG.replace(bot_line, bot_line + "      app_token: ${NOVA_SLACK_APP_TOKEN}\n")
    (stack.workdir / "teammates.yml").write_text(config)
    stack.env["NOVA_SLACK_APP_TOKEN"] = APP_TOKEN
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        stack.env.pop(key, None)  # slack_sdk's SocketModeClient would tunnel 127.0.0.1 through it
    stack.slack.add_app_token(APP_TOKEN, bot_token=NOVA["token"])
    return stack


def dm_event(text: str) -> dict:
    """Ana's DM to Nova (message.im), also stored in the fake's history like a real message."""
    ts = new_ts()
    return {
        "user": ANA,
        "type": "message",
        "ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "text": text,
        "team": "T0TEAM001",
        "blocks": rich_text_blocks(text),
        "channel": NOVA_DM,
        "event_ts": ts,
        "channel_type": "im",
    }


def test_dm_over_socket_mode_is_acked_answered_and_retries_answered_once(stack: Stack) -> None:
    socket_mode_stack(stack).up()
    slack = stack.slack
    slack.wait_socket(APP_TOKEN, timeout=30)
    opens = slack.calls_to("apps.connections.open")
    assert opens and {c["token"] for c in opens} == {APP_TOKEN}  # the xapp- token, not the bot token

    stack.llm.script(Reply(text="Hi Ana, nothing is overdue."))
    event = dm_event("Anything overdue?")
    slack.add_message(NOVA_DM, ANA, event["text"], ts=event["ts"], blocks=event["blocks"])
    event_id = f"Ev{uuid.uuid4().hex[:10].upper()}"
    envelope_id = slack.send_socket_event(APP_TOKEN, event, event_id=event_id)
    assert slack.wait_socket_ack(APP_TOKEN, envelope_id, timeout=30) == {"envelope_id": envelope_id}

    [reply] = slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["channel"] == NOVA_DM
    assert reply["text"] == "Hi Ana, nothing is overdue."
    assert reply.get("thread_ts") is None  # a DM is answered in place, as over HTTP

    # Slack redelivers the same event (same event_id, retry_attempt=1): acked, not answered again.
    retry_id = slack.send_socket_event(APP_TOKEN, event, event_id=event_id, retry_attempt=1)
    slack.wait_socket_ack(APP_TOKEN, retry_id, timeout=30)
    assert slack.socket_acks(APP_TOKEN) == [envelope_id, retry_id]

    # A later message proves the pipeline is idle again, so a second reply to the retry would
    # already have been posted.
    stack.llm.script(Reply(text="You're welcome."))
    thanks = dm_event("Thanks!")
    slack.add_message(NOVA_DM, ANA, thanks["text"], ts=thanks["ts"], blocks=thanks["blocks"])
    slack.wait_socket_ack(APP_TOKEN, slack.send_socket_event(APP_TOKEN, thanks), timeout=30)
    posts = slack.wait_for_posts(2, token=NOVA["token"])
    assert [p["text"] for p in posts] == ["Hi Ana, nothing is overdue.", "You're welcome."]
    assert len(stack.llm.requests) == 2
    wait_until(lambda: slack.reactions(NOVA_DM, event["ts"]) == [], what="working reaction removed")
    assert len(slack.posts_by(NOVA["token"])) == 2


def test_socket_mode_reconnects_when_slack_asks_and_keeps_answering(stack: Stack) -> None:
    socket_mode_stack(stack).up()
    slack = stack.slack
    slack.wait_socket(APP_TOKEN, timeout=30)

    slack.send_socket_disconnect(APP_TOKEN)  # Slack rotates its links every few hours
    slack.wait_socket(APP_TOKEN, timeout=30, connections=2)

    stack.llm.script(Reply(text="Still here."))
    event = dm_event("Are you there?")
    slack.add_message(NOVA_DM, ANA, event["text"], ts=event["ts"], blocks=event["blocks"])
    envelope_id = slack.send_socket_event(APP_TOKEN, event)
    slack.wait_socket_ack(APP_TOKEN, envelope_id, timeout=30)
    [reply] = slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["channel"] == NOVA_DM and reply["text"] == "Still here."


def test_a_rejected_app_token_is_reported_and_does_not_block_the_server(stack: Stack) -> None:
    socket_mode_stack(stack)
    stack.slack.fail_next("apps.connections.open", error="invalid_auth", times=5)
    stack.up()
    assert "member nova: Socket Mode refused (invalid_auth)" in stack.logs("web")
    assert "listening on" in stack.logs("web")
