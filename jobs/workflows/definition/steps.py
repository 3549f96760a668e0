"""The step models of a workflow, their retry policy, and `Step`, their union.

A step is a mapping with the common keys (`id`, `when`, `retry`, `timeout`, `on_error`) and
exactly one kind key (`agent`, `tool`, `post`, `approval`, `wait`/`until`, `condition`,
`foreach`, `parallel`, `handoff`), which selects its model.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from jobs.workflows.definition.fields import (
    PERCENT,
    Duration,
    DurationOrNever,
    Expression,
    Identifier,
    Items,
    MemberId,
    Platform,
    RemindAt,
    Slug,
    StepId,
    Strict,
    ToolName,
    Until,
    problem_error,
)
from jobs.workflows.durations import parse_duration

_RESERVED_NAMES = frozenset({"steps", "inputs", "secrets", "loop"})


class RetryPolicy(Strict):
    """Retries of a failed step: `max` more attempts, waiting `backoff * factor**(n-1)`."""

    max: int = Field(ge=0, description="retries after the first attempt")
    backoff: Duration = Field(default="10s", description="wait before the first retry")
    factor: float = Field(default=2.0, ge=1.0, description="each later wait is this many times longer")

    def delay(self, retry: int) -> timedelta:
        """The wait before retry number `retry` (1 is the first retry)."""
        return parse_duration(self.backoff) * (self.factor ** max(retry - 1, 0))


class _StepBase(Strict):
    """Keys every step has. `on_error`: `abort` fails the run; `skip` records the step as
    skipped and goes on; `continue` records it as failed (its error readable as
    `steps.<id>.error`) and goes on."""

    kind: ClassVar[str]
    id: StepId
    when: Expression | None = Field(default=None, description="run the step only when this is true")
    retry: RetryPolicy | None = None
    timeout: Duration | None = Field(default=None, description="limit for one attempt")
    on_error: Literal["abort", "skip", "continue"] = "abort"

    @property
    def timeout_delta(self) -> timedelta | None:
        return None if self.timeout is None else parse_duration(self.timeout)


class AgentStep(_StepBase):
    """An LLM turn by a member, with its tools; the output is the member's reply."""

    kind: ClassVar[str] = "agent"
    agent: MemberId = Field(description="the member that does the work")
    prompt: str
    tools: list[str] | None = Field(
        default=None, description="limit the member's tools to these; default: all of its tools"
    )


class ToolStep(_StepBase):
    """One call of a registered tool; `args` are templates, and whole-expression args keep types."""

    kind: ClassVar[str] = "tool"
    tool: ToolName
    args: dict[str, Any] = Field(default_factory=dict)


class PostMessage(Strict):
    channel: str = Field(min_length=1, description="channel id (or a template giving one)")
    text: str
    thread_ts: str | None = None
    platform: Platform | None = Field(default=None, description="default: where the workflow was created")


class PostStep(_StepBase):
    """Post a message as the workflow's member."""

    kind: ClassVar[str] = "post"
    post: PostMessage


class ApprovalRequest(Strict):
    message: str
    show: str | None = Field(default=None, description="content to approve; approvers may edit it")
    approvers: list[str] | None = Field(
        default=None,
        description="person ids, Slack user or group ids; default: the workflow's creator (admins always may)",
    )
    quorum: int = Field(default=1, ge=1)
    timeout: DurationOrNever = "7d"
    remind_at: RemindAt = Field(default="80%", description="when to remind the approvers")
    on_timeout: Literal["skip", "abort", "escalate"] = "skip"
    escalate_to: str | None = None
    on_reject: Literal["stop", "continue"] = Field(
        default="stop", description="stop: a rejected or expired approval skips the rest of its block; continue: leave it to when:")
    to: str = Field(default="thread", min_length=1, description="thread, dm, or a channel id")
    platform: Platform | None = Field(default=None, description="default: where the workflow was created")

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalRequest:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise problem_error("escalate_to: required when on_timeout is escalate")
        if self.escalate_to and self.on_timeout != "escalate":
            raise problem_error("escalate_to: only used when on_timeout is escalate")
        timeout = self.timeout_delta
        if "remind_at" in self.model_fields_set and PERCENT.match(self.remind_at) and timeout is None:
            raise problem_error("remind_at: a percentage needs a timeout; with timeout never use a duration such as 3d")
        remind = self.remind_after
        if remind is not None and timeout is not None and remind >= timeout:
            raise problem_error("remind_at: must come before the timeout")
        return self

    @property
    def timeout_delta(self) -> timedelta | None:
        """How long the request stays open; None for `never`."""
        return parse_duration(self.timeout, allow_never=True)

    @property
    def remind_after(self) -> timedelta | None:
        """When, after the request, approvers are reminded; None for no reminder."""
        match = PERCENT.match(self.remind_at)
        if match:
            timeout = self.timeout_delta
            return None if timeout is None else timeout * int(match.group(1)) / 100
        return parse_duration(self.remind_at, allow_never=True)


class ApprovalStep(_StepBase):
    """Ask people to approve (and maybe edit) something; the run waits for the decision."""

    kind: ClassVar[str] = "approval"
    approval: ApprovalRequest


class WaitStep(_StepBase):
    """Pause the run for a duration (`wait: 3d`) or until a time (`until: ...`)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["wait"]}, {"required": ["until"]}]})
    kind: ClassVar[str] = "wait"
    wait: Duration | None = None
    until: Until | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WaitStep:
        if (self.wait is None) == (self.until is None):
            raise problem_error("a wait step has exactly one of wait or until")
        return self

    @property
    def wait_delta(self) -> timedelta | None:
        return None if self.wait is None else parse_duration(self.wait)


class Condition(Strict):
    if_: Expression = Field(alias="if")
    then: list[Step]
    else_: list[Step] = Field(default_factory=list, alias="else")


class ConditionStep(_StepBase):
    """Run the `then` steps when `if` is true, else the `else` steps."""

    kind: ClassVar[str] = "condition"
    condition: Condition


MAX_FOREACH_CONCURRENCY = 50
"""At most this many children of one foreach run at once: each holds a worker and a lease, so
a larger number only starves every other run on the same workers."""


class ForeachStep(_StepBase):
    """Run `steps` once per item (as `item`, or the name in `as`), up to `concurrency` at once.

    Inside, `steps.<id>` refers to the current item's child steps."""

    kind: ClassVar[str] = "foreach"
    foreach: Items
    concurrency: int = Field(default=1, ge=1, le=MAX_FOREACH_CONCURRENCY,
                             description=f"children run at once (1 to {MAX_FOREACH_CONCURRENCY})")
    as_: Identifier = Field(default="item", alias="as", description="the name of the current item")
    steps: list[Step] = Field(min_length=1)

    @field_validator("as_")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in _RESERVED_NAMES:
            raise ValueError(f"a name other than {', '.join(sorted(_RESERVED_NAMES))}")
        return value


class ParallelStep(_StepBase):
    """Run branches at the same time; the step ends when every branch has."""

    kind: ClassVar[str] = "parallel"
    parallel: list[Annotated[list[Step], Field(min_length=1)]] = Field(min_length=1)


class Handoff(Strict):
    member: MemberId
    message: str | None = None
    workflow: Slug | None = Field(default=None, description="start this workflow of the member")
    input: dict[str, Any] | None = Field(default=None, description="input of that workflow's run")

    @model_validator(mode="after")
    def _input_needs_workflow(self) -> Handoff:
        if self.input is not None and self.workflow is None:
            raise problem_error("input: only used with workflow")
        return self


class HandoffStep(_StepBase):
    """Hand the work to another member: a message, or a run of one of its workflows."""

    kind: ClassVar[str] = "handoff"
    handoff: Handoff


STEP_KEYS = {
    "agent": "agent step",
    "tool": "tool step",
    "post": "post step",
    "approval": "approval step",
    "wait": "wait step",
    "until": "wait step",
    "condition": "condition step",
    "foreach": "foreach step",
    "parallel": "parallel step",
    "handoff": "handoff step",
}
STEP_KINDS = ("agent", "tool", "post", "approval", "wait", "condition", "foreach", "parallel", "handoff")


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        # A kind key set to null does not count when another is set: a full `model_dump` of a
        # wait step carries `until: None`, and it must load back as the same step.
        found = [key for key in STEP_KEYS if key in value]
        if len(found) > 1:
            found = [key for key in found if value[key] is not None]
        return STEP_KEYS[found[0]] if len(found) == 1 else None
    if isinstance(value, _StepBase):
        return f"{value.kind} step"
    return None


Step = Annotated[
    Union[  # noqa: UP007  (pydantic needs the tagged members spelled out)
        Annotated[AgentStep, Tag("agent step")],
        Annotated[ToolStep, Tag("tool step")],
        Annotated[PostStep, Tag("post step")],
        Annotated[ApprovalStep, Tag("approval step")],
        Annotated[WaitStep, Tag("wait step")],
        Annotated[ConditionStep, Tag("condition step")],
        Annotated[ForeachStep, Tag("foreach step")],
        Annotated[ParallelStep, Tag("parallel step")],
        Annotated[HandoffStep, Tag("handoff step")],
    ],
    Discriminator(
        _step_tag,
        custom_error_type="step_kind",
        custom_error_message="a step with exactly one kind key",
    ),
]

for _model in (Condition, ConditionStep, ForeachStep, ParallelStep):
    _model.model_rebuild()
