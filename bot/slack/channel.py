"""The Slack side of the channel port: posts, reactions and look-ups with one member's token.

Posts carry our effect id in Slack message metadata, so after a crash the core can find out
whether a post landed. Rate limits (429 + Retry-After), 5xx and dropped connections are
retried by slack-sdk's own retry handlers, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock
from slack_sdk.models.metadata import Metadata
from slack_sdk.web.async_client import AsyncWebClient

from agents.channels import ChannelError
from agents.messages import Button, UserInfo

EFFECT_EVENT = "teammates_effect"
WORKING_REACTION = "eyes"


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
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        effect_id: str | None = None,
        buttons: Sequence[Button] = (),
    ) -> str:
        kwargs: dict[str, Any] = {"channel": channel, "text": text}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if effect_id:
            kwargs["metadata"] = Metadata(event_type=EFFECT_EVENT, event_payload={"effect_id": effect_id})
        if buttons:
            kwargs["blocks"] = [
                SectionBlock(text=text[:3000]).to_dict(),
                ActionsBlock(
                    elements=[
                        ButtonElement(text=b.label, action_id=b.action_id, value=b.value, style=b.style) for b in buttons
                    ]
                ).to_dict(),
            ]
        response = await self._call("chat_postMessage", **kwargs)
        return str(response["ts"])

    async def notify(self, user_id: str, text: str, *, effect_id: str | None = None) -> str:
        """A DM to the person: conversations.open finds (or opens) it, then a post."""
        opened = await self._call("conversations_open", users=user_id)
        return await self.post(str(opened["channel"]["id"]), text, effect_id=effect_id)

    async def find_effect(self, channel: str, thread_ts: str | None, effect_id: str) -> str | None:
        # conversations.* reads are Tier 1 (1/min) for our apps: crash recovery only.
        if thread_ts:
            response = await self._call("conversations_replies", channel=channel, ts=thread_ts, include_all_metadata=True, limit=15)
        else:
            response = await self._call("conversations_history", channel=channel, include_all_metadata=True, limit=15)
        for message in response.get("messages", []):
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == EFFECT_EVENT and (metadata.get("event_payload") or {}).get("effect_id") == effect_id:
                return str(message["ts"])
        return None

    async def set_working(self, channel: str, ts: str, thread_ts: str | None) -> None:
        try:
            await self._call("reactions_add", channel=channel, timestamp=ts, name=WORKING_REACTION)
        except ChannelError as exc:
            if exc.code != "already_reacted":
                raise

    async def clear_working(self, channel: str, ts: str, thread_ts: str | None) -> None:
        try:
            await self._call("reactions_remove", channel=channel, timestamp=ts, name=WORKING_REACTION)
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
        )

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            raise ChannelError(str(exc.response.get("error", "slack_error")), f"{method}: {exc.response.get('error')}") from None
