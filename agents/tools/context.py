"""What a tool may reach while it runs: the member, the conversation it serves, its channel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agents.channels import Channel
from agents.members import MemberProfile


@dataclass(frozen=True)
class HistoryLine:
    role: str
    author_id: str
    text: str
    at: str


@dataclass(frozen=True)
class ToolContext:
    member: MemberProfile
    channel: Channel
    conversation_channel: str
    thread_ts: str | None
    user_id: str
    run_id: str
    history: Callable[[int], Awaitable[list[HistoryLine]]]
    call_id: str = ""  # the model's tool_use id: makes each call's effects distinct
