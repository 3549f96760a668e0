"""One slack-bolt `AsyncApp` per member, each with its own token and signing secret.

`process_before_response=True` makes Bolt run the listener before it answers Slack, and the
listener only hands the message to the inbox (well under a ms): the ack goes out after the
message is durably recorded; its job is enqueued after the ack. An exception answers 500, a
database too busy to record within the ack's bound 503; either way nothing was recorded and
Slack delivers again."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

from agents.messages import RETRY_TURN_ACTION
from bot.inbox import Inbox
from bot.slack.channel import web_client
from bot.slack.events import to_inbound
from storage.recorder import RecorderBusy

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

    async def on_error(error: Exception, response: BoltResponse | None) -> BoltResponse | None:
        if isinstance(error, RecorderBusy):
            log.warning("event not recorded, Slack will deliver it again: %s", error, extra={"member": member_id})
            return BoltResponse(status=503, body="") if response is not None else None
        log.error("listener failed: %s", type(error).__name__, exc_info=error, extra={"member": member_id})
        return None  # Bolt's 500

    app.error(on_error)
    app.event("message")(on_message)
    app.event("app_mention")(on_message)
    app.action(RETRY_TURN_ACTION)(on_retry)
    return app
