"""One slack-bolt `AsyncApp` per member, each with its own token and signing secret.

`process_before_response=True` makes Bolt run the listener before it answers Slack, and the
listener only hands the message to the inbox (well under a ms): the ack goes out after the
message is durably recorded; its job is enqueued after the ack. An exception answers 500, a
database too busy to record within the ack's bound 503; either way nothing was recorded and
Slack delivers again."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

from agents.channels import ChannelError
from agents.messages import Form, InboundAction
from bot.inbox import Inbox
from bot.slack.actions import from_click, from_command, from_submission
from bot.slack.channel import SlackChannel, web_client
from bot.slack.events import home_opened, to_inbound
from jobs.actions import FORM_ACTIONS, form_for
from jobs.console import forms
from storage.recorder import RecorderBusy
from teammates.config import Config

log = logging.getLogger(__name__)


def member_app(member_id: str, bot_token: str, signing_secret: str, api_url: str, inbox: Inbox, config: Config) -> AsyncApp:
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

    channel = SlackChannel(app.client)

    async def on_click(ack: Any, body: dict[str, Any]) -> None:
        """Record the click before the ack (Slack never delivers it again); the core's job
        does it and checks who may. A click that opens a form opens it now, in this request:
        its trigger lives 3 s."""
        action = from_click(member_id, body)
        if action is None:
            await ack()
            return
        if action.action in FORM_ACTIONS:
            await _open_form(action)
        else:
            await inbox.act(action)
        await ack()

    async def _open_form(action: InboundAction) -> None:
        await _show_form(action, await form_for(inbox.db, action))

    async def _show_form(action: InboundAction, answer: Form | str) -> None:
        """The form the click opens (its trigger lives 3 s), or the sentence that answers instead."""
        try:
            if isinstance(answer, str):
                await channel.notice(action.where, action.user_id, answer)
            elif action.trigger:
                await channel.open_form(action.trigger, answer, action.where)
        except ChannelError as exc:
            log.warning("form not opened: %s", exc.code, extra={"member": member_id})

    async def on_command(ack: Any, body: dict[str, Any]) -> None:
        """The member's slash command: recorded before the ack (Slack sends it once), answered
        privately by a job within moments. `config` opens its form now, in this request."""
        action = from_command(member_id, body)
        if action is not None and forms.opens_form(action):
            await _open_command_form(action)
        elif action is not None:
            await inbox.act(action)
        await ack()

    async def _open_command_form(action: InboundAction) -> None:
        await _show_form(action, await forms.form_for(inbox.db, config, action, channel))

    async def on_home_opened(body: dict[str, Any]) -> None:
        """Recorded (a redelivery finds its row), then a job publishes the tab for the person."""
        action = home_opened(member_id, body)
        if action is not None:
            await inbox.act(action)

    async def on_submit(ack: Any, body: dict[str, Any]) -> None:
        action = from_submission(member_id, body)
        if action is not None:
            await inbox.act(action)
        await ack()  # closes the modal; what it did shows in the message and a private notice

    async def on_error(error: Exception, response: BoltResponse | None) -> BoltResponse | None:
        if isinstance(error, RecorderBusy):
            log.warning("event not recorded, Slack will deliver it again: %s", error, extra={"member": member_id})
            return BoltResponse(status=503, body="") if response is not None else None
        log.error("listener failed: %s", type(error).__name__, exc_info=error, extra={"member": member_id})
        return None  # Bolt's 500

    app.error(on_error)
    app.event("message")(on_message)
    app.event("app_mention")(on_message)
    app.event("app_home_opened")(on_home_opened)
    app.command(config.member(member_id).command)(on_command)
    app.action(re.compile(r"^(retry_turn|(approval|plan|effect|workflow)\.[a-z_]+)$"))(on_click)
    app.view(re.compile(r"^(approval\.[a-z_]+|member\.config)$"))(on_submit)
    return app
