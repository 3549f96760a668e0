"""What a tool may reach while it runs: the member, the conversation it serves, its channel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agents.channels import Channel
from agents.members import MemberProfile
from agents.messages import MessageRef

if TYPE_CHECKING:
    from agents.tools.registry import Tool


@dataclass(frozen=True)
class HistoryLine:
    role: str
    author_id: str
    text: str
    at: str


class EffectLog(Protocol):
    """Where a tool records an outbound effect (`started` before, `done` after), so a retried
    turn does each effect at most once: the Nth effect of a kind in a turn keeps its id on
    every attempt of that turn."""

    def next_id(self, kind: str) -> str:
        """The id of this turn's next effect of `kind` (the same on every attempt)."""
        ...

    async def begin(self, effect_id: str, kind: str, intent: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
        """Record the intent unless a row exists; (status, result, existed before this call)."""
        ...

    async def finish(self, effect_id: str, result: dict[str, Any]) -> None:
        ...


@dataclass(frozen=True)
class Held:
    """A tool call the effect gate did not let through: `message` goes back to the model as
    the call's result (`error`: as an error result, or as a plain answer such as "waiting for
    the person's OK")."""

    message: str
    error: bool = True


EffectGate = Callable[["Tool[Any]", "ToolContext", Any], Awaitable[Held | None]]
"""Asked before every tool call of a turn (with the tool, the call's context and the model's
raw, unvalidated input): None lets the call run; a `Held` stops it. The jobs layer provides it
(autonomy: an effect needs an approval or a person's OK); `agents/` only obeys it."""


@dataclass(frozen=True)
class ToolContext:
    member: MemberProfile
    channel: Channel
    conversation: MessageRef | None  # where the member is answering (its thread), None in a workflow step
    user_id: str
    run_id: str
    history: Callable[[int], Awaitable[list[HistoryLine]]]
    call_id: str = ""  # the model's tool_use id: makes each call's effects distinct
    effects: EffectLog | None = None  # None: effects are not recorded (no retry to guard)
    conversation_id: int | None = None  # the stored conversation (opaque here): where plans note what happened
    # The workspace's stored secrets, for tools whose configuration reads them (an HTTP tool's
    # url and headers); a value is decrypted only when read. None: no secrets here.
    secrets: Callable[[], Awaitable[Mapping[str, str]]] | None = None
    gate: EffectGate | None = None  # None: every call runs (the caller already has the OK)
