"""One slack-bolt `AsyncApp` per member, each with its own token and signing secret.

`process_before_response=True` makes Bolt run the listener before it answers Slack, and the
listener only hands the message to the inbox (a few ms): the ack goes out after the message
is durably recorded and enqueued. An exception answers 500 and Slack delivers again."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from agents.messages import RETRY_TURN_ACTION
from bot.inbox import Inbox
from bot.slack.channel import web_client
from bot.slack.events import to_inbound

log = logging.getLogger(__name__)


def member_app(member_id: str, bot_token: str, signing_secret: str, api_url: str, inbox: Inbox) -> AsyncApp:
    app = AsyncApp(
        name=f"teammates-{member_id}",
        signing_secret=signing_secret,
        client=web_client(bot_token, api_url),
        process_before_response=True,
    )

    async def on_message(body: dict[str, Any], context: AsyncBoltContext) -> None:
        msg = to_inbound(member_id, body, context.bot_user_id)
        if msg is not None:
            await inbox.accept(msg)

    async def on_retry(ack: Any, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        value = action.get("value")
        # Our own button carries an inbound row id; anything else is not a click to act on.
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 18:
            await ack()
            return
        await inbox.retry(int(value))
        await ack()

    app.event("message")(on_message)
    app.event("app_mention")(on_message)
    app.action(RETRY_TURN_ACTION)(on_retry)
    return app
