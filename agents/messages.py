"""Plain message types shared by every channel: no Slack or Teams shapes beyond this line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MessageKind = Literal["dm", "mention", "thread", "terminal"]


@dataclass(frozen=True)
class InboundMessage:
    """A message a person sent that may be addressed to a member.

    `kind` says why it reached the member: a direct message, an @mention, or a reply in a
    thread (which the member answers only if it is already part of that thread)."""

    member_id: str
    platform: str
    event_id: str
    kind: MessageKind
    channel: str
    ts: str
    user_id: str
    text: str
    thread_ts: str | None = None

    @property
    def reply_thread(self) -> str | None:
        """Where the answer goes: DMs answer in place, channel messages in their thread."""
        if self.kind in ("dm", "terminal"):
            return self.thread_ts
        return self.thread_ts or self.ts

    @property
    def thread_key(self) -> str:
        """Identifies the conversation: one per person for a DM's main line, one per thread."""
        if self.kind in ("dm", "terminal") and self.thread_ts is None:
            return ""
        return self.thread_ts or self.ts


@dataclass(frozen=True)
class UserInfo:
    """What a member may know about a colleague."""

    id: str
    name: str
    real_name: str | None = None
    email: str | None = None
    timezone: str | None = None
    is_bot: bool = False


@dataclass(frozen=True)
class Button:
    """An action offered under a message (rendered as Block Kit or Adaptive Card buttons)."""

    action_id: str
    label: str
    value: str
    style: Literal["primary", "danger"] | None = None


RETRY_TURN_ACTION = "retry_turn"
"""Button under an apology: answer the failed message again."""
