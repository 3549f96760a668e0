"""The Slack side of the channel port: posts, reactions and look-ups with one member's token.

Posts carry our effect id in Slack message metadata, so after a crash the core can find out
whether a post landed. Rate limits (429 + Retry-After), 5xx and dropped connections are
retried by slack-sdk's own retry handlers, never dropped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.models.metadata import Metadata
from slack_sdk.web.async_client import AsyncWebClient

from agents.channels import ChannelError
from agents.messages import HOME_TAB, Button, Card, Form, MessageRef, Page, UserInfo
from bot.slack.actions import form_metadata
from bot.slack.blocks import buttons_blocks, card_blocks, form_view, home_view, page_blocks

EFFECT_EVENT = "teammates_effect"
WORKING_REACTION = "eyes"

# How far `find_effect` looks back for a post that may have landed before a crash. A job is
# retried within minutes of the crash, so a few hundred messages cover any channel a member
# works in; the page and time bounds keep a Tier 1 app (one page a minute) inside a turn's
# job timeout.
FIND_EFFECT_MAX_MESSAGES = 300
FIND_EFFECT_MAX_PAGES = 20
FIND_EFFECT_BUDGET = 60.0
_PAGE_LIMIT = 200  # Slack's recommended maximum; Tier 1 apps get 15 whatever they ask
# Where an ephemeral cannot reach the person: they (or the member) are not in that channel.
_UNREACHABLE = ("user_not_in_channel", "channel_not_found", "not_in_channel", "is_archived")


def web_client(token: str, api_url: str) -> AsyncWebClient:
    """A client for one member's token, with retries for rate limits, 5xx and connections."""
    return AsyncWebClient(
        token=token,
        base_url=api_url,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackChannel:
    platform = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(
        self,
        to: MessageRef,
        text: str,
        *,
        effect_id: str | None = None,
        buttons: Sequence[Button] = (),
    ) -> MessageRef:
        kwargs: dict[str, Any] = {"channel": to.conversation, "text": text}
        if to.thread:
            kwargs["thread_ts"] = to.thread
        if effect_id:
            kwargs["metadata"] = Metadata(event_type=EFFECT_EVENT, event_payload={"effect_id": effect_id})
        if buttons:
            kwargs["blocks"] = buttons_blocks(text, list(buttons))
        response = await self._call("chat_postMessage", **kwargs)
        return MessageRef(str(response.get("channel") or to.conversation), str(response["ts"]), to.thread)

    async def notify(self, user_id: str, text: str, *, effect_id: str | None = None) -> MessageRef:
        """A DM to the person: conversations.open finds (or opens) it, then a post."""
        opened = await self._call("conversations_open", users=user_id)
        return await self.post(MessageRef(str(opened["channel"]["id"])), text, effect_id=effect_id)

    async def send_card(self, to: MessageRef, card: Card, *, effect_id: str | None = None) -> MessageRef:
        kwargs: dict[str, Any] = {"channel": to.conversation, "text": card.text}
        if to.thread:
            kwargs["thread_ts"] = to.thread
        if effect_id:
            kwargs["metadata"] = Metadata(event_type=EFFECT_EVENT, event_payload={"effect_id": effect_id})
        response = await self._card_call("chat_postMessage", card, **kwargs)
        return MessageRef(str(response["channel"]), str(response["ts"]), to.thread)

    async def send_card_to_person(self, user_id: str, card: Card, *, effect_id: str | None = None) -> MessageRef:
        opened = await self._call("conversations_open", users=user_id)
        return await self.send_card(MessageRef(str(opened["channel"]["id"])), card, effect_id=effect_id)

    async def update(self, ref: MessageRef, card: Card) -> None:
        """chat.update with the bot token: works for as long as the message exists (a
        `response_url` stops working after 30 minutes)."""
        await self._card_call("chat_update", card, channel=ref.conversation, ts=ref.message, text=card.text)

    async def notice(self, where: MessageRef | None, user_id: str, text: str) -> None:
        """chat.postEphemeral in the conversation; a DM when that cannot reach them (not in
        the channel, or no conversation at all)."""
        if not await self._ephemeral(where, user_id, text=text):
            await self.notify(user_id, text)

    async def show(self, where: MessageRef | None, user_id: str, page: Page) -> None:
        """chat.postEphemeral with the page's blocks in the conversation (a slash command's
        answer); a DM when the member cannot post there (a channel it is not in)."""
        blocks = page_blocks(page)
        if await self._ephemeral(where, user_id, text=page.text, blocks=blocks):
            return
        opened = await self._call("conversations_open", users=user_id)
        await self._call("chat_postMessage", channel=str(opened["channel"]["id"]), text=page.text, blocks=blocks)

    async def _ephemeral(self, where: MessageRef | None, user_id: str, **message: Any) -> bool:
        """chat.postEphemeral in the conversation (its thread, if any); False when there is none,
        or it cannot reach the person there (the caller then writes to them directly)."""
        if where is None or where == HOME_TAB:
            return False
        kwargs: dict[str, Any] = {"channel": where.conversation, "user": user_id, **message}
        if where.thread:
            kwargs["thread_ts"] = where.thread
        try:
            await self._call("chat_postEphemeral", **kwargs)
        except ChannelError as exc:
            if exc.code not in _UNREACHABLE:
                raise
            return False
        return True

    async def publish_home(self, user_id: str, page: Page) -> None:
        """views.publish with the member's own token: its App Home for that person."""
        await self._call("views_publish", user_id=user_id, view=home_view(page))

    async def open_form(self, trigger: str, form: Form, where: MessageRef | None = None) -> None:
        """views.open; the modal remembers where the click was, for the answer to its submission."""
        await self._call("views_open", trigger_id=trigger, view=form_view(form, form_metadata(form, where)))

    async def group_members(self, group_id: str) -> list[str] | None:
        """usergroups.users.list (scope `usergroups:read`); None for an id that is no group."""
        if not group_id.startswith("S"):
            return None
        try:
            response = await self._call("usergroups_users_list", usergroup=group_id)
        except ChannelError as exc:
            if exc.code in ("no_such_subteam", "subteam_not_found", "invalid_usergroup"):
                return None
            raise
        return [str(u) for u in response.get("users") or []]

    def mention(self, user_id: str) -> str:
        return f"<!subteam^{user_id}>" if user_id.startswith("S") else f"<@{user_id}>"

    def mention_conversation(self, conversation: str) -> str:
        return f"<#{conversation}>"

    async def find_effect(self, where: MessageRef, effect_id: str) -> MessageRef | None:
        """Page through the channel's history (newest first) or the thread's replies (oldest
        first) until the post carrying `effect_id` is found, so a post that landed is found
        even when many messages followed it — bounded by `FIND_EFFECT_MAX_MESSAGES` messages,
        `FIND_EFFECT_MAX_PAGES` pages and `FIND_EFFECT_BUDGET` seconds, whichever comes first.

        These reads are Tier 1 (1/min, at most 15 messages) for apps outside the Marketplace
        and Tier 3 for the others: a page asks for Slack's maximum and gets what the app's tier
        allows; a 429 is waited out by the client's retry handler. Crash recovery only."""
        channel, thread_ts = where.conversation, where.thread
        method, kwargs = (
            ("conversations_replies", {"ts": thread_ts}) if thread_ts else ("conversations_history", {})
        )
        deadline = time.monotonic() + FIND_EFFECT_BUDGET
        seen = 0
        cursor: str | None = None
        for _ in range(FIND_EFFECT_MAX_PAGES):
            page_kwargs = {**kwargs, "cursor": cursor} if cursor else kwargs
            response = await self._call(method, channel=channel, include_all_metadata=True, limit=_PAGE_LIMIT, **page_kwargs)
            messages = response.get("messages") or []
            for message in messages:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == EFFECT_EVENT and (metadata.get("event_payload") or {}).get("effect_id") == effect_id:
                    return MessageRef(channel, str(message["ts"]), thread_ts)
            seen += len(messages)
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor or seen >= FIND_EFFECT_MAX_MESSAGES or time.monotonic() > deadline:
                break
        return None

    async def set_working(self, message: MessageRef) -> None:
        try:
            await self._call("reactions_add", channel=message.conversation, timestamp=message.message, name=WORKING_REACTION)
        except ChannelError as exc:
            if exc.code != "already_reacted":
                raise

    async def clear_working(self, message: MessageRef) -> None:
        try:
            await self._call("reactions_remove", channel=message.conversation, timestamp=message.message, name=WORKING_REACTION)
        except ChannelError as exc:
            if exc.code != "no_reaction":
                raise

    async def lookup_user(self, user_id: str) -> UserInfo | None:
        try:
            response = await self._call("users_info", user=user_id)
        except ChannelError as exc:
            if exc.code == "user_not_found":
                return None
            raise
        user = response["user"]
        profile = user.get("profile") or {}
        return UserInfo(
            id=user["id"],
            name=profile.get("display_name") or user.get("name") or user["id"],
            real_name=user.get("real_name") or profile.get("real_name"),
            email=profile.get("email"),
            timezone=user.get("tz"),
            is_bot=bool(user.get("is_bot")),
            is_admin=bool(user.get("is_admin") or user.get("is_owner")),
        )

    async def _card_call(self, method: str, card: Card, **kwargs: Any) -> Any:
        """`method` with the card's blocks. A card with tasks goes out as a native `plan`; where
        Slack refuses that block (a workspace or surface without agent blocks: `invalid_blocks`),
        once more with the plain numbered-list fallback, so the message still lands."""
        try:
            return await self._call(method, blocks=card_blocks(card), **kwargs)
        except ChannelError as exc:
            if not card.tasks or exc.code != "invalid_blocks":
                raise
        return await self._call(method, blocks=card_blocks(card, native_tasks=False), **kwargs)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            raise ChannelError(str(exc.response.get("error", "slack_error")), f"{method}: {exc.response.get('error')}") from None
