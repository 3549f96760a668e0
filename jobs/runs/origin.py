"""Where a run came from: the conversation, thread and person that approvals, posts and notices
default to (stored whole in `workflow_runs.origin`).

The stored shape is exactly five keys, whatever started the run:
`{"via": ..., "platform": ..., "conversation": ..., "thread": ..., "person": ...}`
- `via`: chat | cli | schedule | webhook | handoff | event;
- `platform`: "slack" (or another platform's name), None when no platform was involved;
- `conversation`: the platform's channel id, `thread`: its thread id (Slack's thread ts);
- `person`: a person id from the config's `people:`, or a platform user id (Slack "U0ANA0001").
A run without an origin (started before this column existed) stores NULL.

A run started by another run (a handoff, or an event that run published) keeps the parent's
platform, conversation, thread and person, so a chain of runs still answers where it began."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, cast, get_args

Via = Literal["chat", "cli", "schedule", "webhook", "handoff", "event"]
VIAS: tuple[str, ...] = get_args(Via)
KEYS = ("via", "platform", "conversation", "thread", "person")


@dataclass(frozen=True)
class Origin:
    """A run's origin. Invariant: `via` is one of `VIAS`; the other fields are a str or None."""

    via: Via
    platform: str | None = None
    conversation: str | None = None
    thread: str | None = None
    person: str | None = None

    def __post_init__(self) -> None:
        if self.via not in VIAS:
            raise ValueError(f"origin: via must be one of {', '.join(VIAS)}, not {self.via!r}")
        for key in KEYS[1:]:
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"origin: {key} must be a string or None, not {type(value).__name__}")

    def to_json(self) -> dict[str, Any]:
        """The stored shape: always all five keys, in this order."""
        return {key: getattr(self, key) for key in KEYS}

    @classmethod
    def from_json(cls, value: Any) -> Origin | None:
        """The origin of a stored value; None for None (a run from before origins were kept).
        Unknown keys are ignored, missing ones are None; a bad `via` raises ValueError."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"origin: expected an object, not {type(value).__name__}")
        return cls(via=cast(Via, value.get("via")), **{key: value.get(key) for key in KEYS[1:]})

    def passed_on(self, via: Via) -> Origin:
        """The origin of a run this run starts (`handoff`, `event`): same platform,
        conversation, thread and person; another `via`."""
        return replace(self, via=via)

    @classmethod
    def inherited(cls, parent: Origin | None, via: Via) -> Origin:
        """`parent.passed_on(via)`, or a bare origin of that kind when the parent run has none."""
        return parent.passed_on(via) if parent is not None else cls(via=via)

    @classmethod
    def of_workflow(cls, home: dict[str, Any] | None, creator: str | None, via: Via) -> Origin:
        """The origin of a run no person started (a schedule, a webhook): where the workflow
        was built when it was built in a conversation (`workflows.home`), so it reports back
        there; otherwise no conversation, and its person is the workflow's creator."""
        if home and home.get("conversation"):
            return cls(via=via, platform=home.get("platform"), conversation=home.get("conversation"),
                       thread=home.get("thread"), person=home.get("person") or creator)
        return cls(via=via, person=creator)

    def describe(self) -> str:
        """One short line for people: `cli ana`, `chat slack C0GENERAL1 U0ANA0001`."""
        return " ".join(part for part in (self.via, self.platform, self.conversation, self.person) if part)
