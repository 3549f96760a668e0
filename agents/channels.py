"""The channel port: what the core needs from a chat platform, implemented by `bot/` adapters.

The core never sees a Slack or Teams object: it asks a `Channel` to post, to show that a member
is working, or to look up a person. Messages are named by `MessageRef` (conversation, message,
thread) whose ids only the adapter reads, and people are named in text through `mention`. Every post carries an effect id, so after a crash the core
can ask whether that exact post already landed before posting again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agents.messages import Button, Card, Form, MessageRef, Page, UserInfo


class ChannelError(Exception):
    """The platform refused or failed a call; `code` is its short error name."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


class Channel(Protocol):
    """One member's connection to one platform."""

    platform: str

    async def post(
        self,
        to: MessageRef,
        text: str,
        *,
        effect_id: str | None = None,
        buttons: Sequence[Button] = (),
    ) -> MessageRef:
        """Post a message in `to.conversation` (in `to.thread` if set); where it landed."""
        ...

    async def find_effect(self, where: MessageRef, effect_id: str) -> MessageRef | None:
        """An earlier post carrying `effect_id` in `where`'s conversation (or thread), if one
        landed (crash recovery only)."""
        ...

    async def set_working(self, message: MessageRef) -> None:
        """Show that the member is working on `message`."""
        ...

    async def clear_working(self, message: MessageRef) -> None:
        ...

    async def lookup_user(self, user_id: str) -> UserInfo | None:
        ...

    async def notify(self, user_id: str, text: str, *, effect_id: str | None = None) -> MessageRef:
        """Send `text` to the person `user_id` privately, outside the conversation (a Slack
        DM); where it landed. Raises `ChannelError` where the platform cannot reach them."""
        ...

    async def send_card(self, to: MessageRef, card: Card, *, effect_id: str | None = None) -> MessageRef:
        """Post `card` in `to.conversation` (in `to.thread` if set); where it landed."""
        ...

    async def send_card_to_person(self, user_id: str, card: Card, *, effect_id: str | None = None) -> MessageRef:
        """`send_card` in the person's private conversation with the member (a DM)."""
        ...

    async def update(self, ref: MessageRef, card: Card) -> None:
        """Replace the message at `ref` with `card` (with the member's own credentials, so it
        works however long after the click)."""
        ...

    async def notice(self, where: MessageRef | None, user_id: str, text: str) -> None:
        """A private notice only `user_id` sees, in `where`'s conversation (else a DM)."""
        ...

    async def show(self, where: MessageRef | None, user_id: str, page: Page) -> None:
        """`notice` with structure: a page only `user_id` sees, in `where`'s conversation (else
        in their private conversation with the member)."""
        ...

    async def publish_home(self, user_id: str, page: Page) -> None:
        """Show `page` as the member's home tab for the person `user_id` (replacing what it
        showed them before). Raises `ChannelError` where the platform has no such tab."""
        ...

    async def open_form(self, trigger: str, form: Form, where: MessageRef | None = None) -> None:
        """Open `form` for the person whose action carried `trigger` (short-lived: seconds);
        its submission's action carries `where` (the message the click was on)."""
        ...

    async def group_members(self, group_id: str) -> list[str] | None:
        """The user ids in a user group; None when `group_id` is not a group."""
        ...

    def mention(self, user_id: str) -> str:
        """How a message names a person so the platform shows (and notifies) them."""
        ...

    def mention_conversation(self, conversation: str) -> str:
        """How a message names a conversation (a link to the channel)."""
        ...


# Platform refusals that no retry can change: the channel is gone, the member is not in it,
# its token is dead, or the request itself is wrong. Everything else (rate limits, 5xx,
# timeouts, dropped connections) may pass on a later attempt.
TRANSIENT_CODES = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the call that raised `exc` cannot succeed."""
    return isinstance(exc, ChannelError) and exc.code not in TRANSIENT_CODES


ChannelProvider = Callable[[str, str], Channel]
"""(platform, member id) -> the member's channel on that platform."""
