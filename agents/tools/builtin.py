"""The first real tools every member can be given."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from agents.channels import ChannelError
from agents.messages import MessageRef
from agents.tools.context import ToolContext
from agents.tools.registry import ToolError, register


class ThreadHistoryInput(BaseModel):
    limit: int = Field(default=20, ge=1, le=200, description="How many of the latest messages to return")


@register(
    "get_thread_history",
    "Read the latest messages of the current conversation (this DM or channel thread), oldest first.",
    ThreadHistoryInput,
)
async def get_thread_history(ctx: ToolContext, args: ThreadHistoryInput) -> list[dict[str, Any]]:
    lines = await ctx.history(args.limit)
    return [{"from": line.author_id, "role": line.role, "text": line.text, "at": line.at} for line in lines]


class LookupUserInput(BaseModel):
    user_id: str = Field(description="The person's platform user id, e.g. U0123ABCD (without <@ >)")


@register("lookup_user", "Look up a colleague's name, email and time zone by user id.", LookupUserInput)
async def lookup_user(ctx: ToolContext, args: LookupUserInput) -> dict[str, Any]:
    user_id = args.user_id.strip().removeprefix("<@").removesuffix(">")
    try:
        info = await ctx.channel.lookup_user(user_id)
    except ChannelError as exc:
        raise ToolError(f"could not look up {user_id}: {exc.code}") from None
    if info is None:
        raise ToolError(f"no user {user_id}")
    return {"id": info.id, "name": info.name, "real_name": info.real_name, "email": info.email, "timezone": info.timezone, "is_bot": info.is_bot}


class PostMessageInput(BaseModel):
    channel: str = Field(description="Channel id (e.g. C0123ABCD) of a channel you are a member of")
    text: str = Field(min_length=1, max_length=3000, description="The message, in Slack mrkdwn")
    thread: str | None = Field(default=None, validation_alias=AliasChoices("thread", "thread_ts"),
                               description="Reply in this thread (the id of its first message) instead of the channel")


@register(
    "post_message",
    "Post a message to a team channel you are a member of. Not for DMs to the person you are "
    "talking with (just answer them) and never for channels shared with clients.",
    PostMessageInput,
)
async def post_message(ctx: ToolContext, args: PostMessageInput) -> dict[str, Any]:
    """An effect: recorded `started` before the post and `done` after, under an id that a
    retried turn gives its Nth post again, so a retry never posts twice."""
    channel = args.channel.strip().removeprefix("<#").split("|")[0].removesuffix(">")
    if ctx.effects is None:
        return await _post(ctx, channel, args, f"{ctx.run_id}-{ctx.call_id}")
    effect_id = ctx.effects.next_id("post")
    status, stored, existed = await ctx.effects.begin(effect_id, "post", {"channel": channel, "text": args.text})
    if status == "done":
        return {"posted": True, "channel": stored.get("channel", channel), "ts": stored.get("ts")}
    if existed:  # an earlier attempt may have posted before it died: look before posting again
        try:
            found = await ctx.channel.find_effect(MessageRef(str(stored.get("channel", channel)), None, args.thread), effect_id)
        except ChannelError:
            found = None
        if found is not None:
            await ctx.effects.finish(effect_id, {**stored, "ts": found.message})
            return {"posted": True, "channel": stored.get("channel", channel), "ts": found.message}
    result = await _post(ctx, channel, args, effect_id)
    await ctx.effects.finish(effect_id, {"channel": channel, "text": args.text, "ts": result["ts"]})
    return result


async def _post(ctx: ToolContext, channel: str, args: PostMessageInput, effect_id: str) -> dict[str, Any]:
    try:
        posted = await ctx.channel.post(MessageRef(channel, None, args.thread), args.text, effect_id=effect_id)
    except ChannelError as exc:
        hints = {"not_in_channel": "you are not a member of that channel", "channel_not_found": "no such channel"}
        raise ToolError(f"could not post to {channel}: {hints.get(exc.code, exc.code)}") from None
    return {"posted": True, "channel": channel, "ts": posted.message}


class CurrentTimeInput(BaseModel):
    timezone: str | None = Field(default=None, description="IANA time zone; default: the workspace's")


@register("current_time", "The current date and time (for deadlines, 'today', 'in 3 days').", CurrentTimeInput)
async def current_time(ctx: ToolContext, args: CurrentTimeInput) -> dict[str, Any]:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(args.timezone) if args.timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {args.timezone!r}") from None
    now = datetime.now(zone)
    return {"iso": now.isoformat(), "weekday": now.strftime("%A"), "timezone": str(zone)}
