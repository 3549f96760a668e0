"""The workflow definition format (YAML or JSON): models, loading, and its published JSON Schema.

`load_definition` is the one way in from user text. Every problem becomes one `DefinitionError`
line naming the source, where in the document (`steps[remind].steps[draft].retry.max` — steps by
their id, other list entries by name or index), and what was expected. Everything that can be
known before a run is checked here — cron, time zone, durations, template syntax, unique step
ids — so a broken workflow fails at `teammates workflow apply`, not at 9:00 on Monday.

A step is a mapping with the common keys (`id`, `when`, `retry`, `timeout`, `on_error`) and
exactly one kind key (`agent`, `tool`, `post`, `approval`, `wait`/`until`, `condition`,
`foreach`, `parallel`, `handoff`), which selects its model.

Step paths (`iter_steps`): the ids from the top-level step down to the step, joined by `/`.
A `foreach` adds its children directly (`remind/draft`), a `condition` adds the branch name
(`branch/then/notify`, `branch/else/log`), a `parallel` adds the branch number from 0
(`fan/1/summarize`). Ids are unique in the whole workflow, so the last segment alone identifies a
step; the rest says where it sits.

Run `python -m jobs.workflows.definition > docs/workflow.schema.json` to publish the schema.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from datetime import datetime, timedelta
from difflib import get_close_matches
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from jobs.workflows import templates
from jobs.workflows.durations import EXPECTED as DURATION_EXPECTED
from jobs.workflows.durations import NEVER, PATTERN, parse_duration


class DefinitionError(Exception):
    """A user error in a workflow definition; its message is one line a person can act on."""


# --- value types -----------------------------------------------------------------------------

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MEMBER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# No '-' in step ids: templates read `steps.<id>.output`, and Jinja reads `steps.send-mail` as a
# subtraction. Letters, digits and '_' are still url-safe (and allowed in RQ job ids).
_STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_PERCENT = re.compile(r"^\s*(\d{1,2})\s*%\s*$")
_RESERVED_NAMES = frozenset({"steps", "inputs", "secrets", "loop"})


def _matching(pattern: re.Pattern[str], expected: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(expected)
        return value

    return AfterValidator(check)


def _string_schema(pattern: re.Pattern[str], description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern.pattern, "description": description})


_SLUG_TEXT = "a url-safe name: lowercase letters, digits, '-' or '_'"
_MEMBER_TEXT = "a member id: lowercase letters, digits, '-' or '_'"
_STEP_ID_TEXT = "a step id of lowercase letters, digits and '_', starting with a letter (templates read it as steps.<id>)"
_IDENTIFIER_TEXT = "a name of letters, digits and '_', not starting with a digit (templates read it as a variable)"

Slug = Annotated[str, _matching(_SLUG, _SLUG_TEXT), _string_schema(_SLUG, _SLUG_TEXT)]
MemberId = Annotated[str, _matching(_MEMBER, _MEMBER_TEXT), _string_schema(_MEMBER, _MEMBER_TEXT)]
StepId = Annotated[str, _matching(_STEP_ID, _STEP_ID_TEXT), _string_schema(_STEP_ID, _STEP_ID_TEXT)]
Identifier = Annotated[
    str, _matching(_IDENTIFIER, _IDENTIFIER_TEXT), _string_schema(_IDENTIFIER, _IDENTIFIER_TEXT)
]
ToolName = Annotated[
    str, _matching(_TOOL, "a tool name from the tool registry"), _string_schema(_TOOL, "a tool name")
]
EventName = Annotated[
    str,
    _matching(_EVENT, "an event name such as approval.decided"),
    _string_schema(_EVENT, "an event name such as approval.decided"),
]
Platform = Literal["slack", "teams"]


def _problem(message: str) -> PydanticCustomError:
    """An error whose message is printed as written (after the path), not as 'expected ...'."""
    return PydanticCustomError("workflow", "{problem}", {"problem": message})


def _duration_text(allow_never: bool) -> BeforeValidator:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(DURATION_EXPECTED + (" or 'never'" if allow_never else ""))
        try:
            parse_duration(value, allow_never=allow_never)
        except ValueError:
            if isinstance(value, str) and value.strip().lower() == NEVER:
                raise ValueError(f"{DURATION_EXPECTED}; 'never' is not allowed here") from None
            raise ValueError(DURATION_EXPECTED + (" or 'never'" if allow_never else "")) from None
        return str(value).strip()

    return BeforeValidator(check)


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": PATTERN}, {"type": "integer", "minimum": 0}],
    "description": DURATION_EXPECTED,
}
Duration = Annotated[str, _duration_text(False), WithJsonSchema(_DURATION_SCHEMA)]
DurationOrNever = Annotated[
    str,
    _duration_text(True),
    WithJsonSchema(
        {
            "anyOf": [*_DURATION_SCHEMA["anyOf"], {"const": NEVER}],
            "description": f"{DURATION_EXPECTED}, or 'never'",
        }
    ),
]


def _check_expression(value: Any) -> Any:
    """`when` / `if`: a bool, or a string that is exactly one `{{ expression }}`."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError("true, false or a template such as \"{{ steps.review.approved }}\"")
    problem = templates.check(value)
    if problem:
        raise _problem(problem)
    if templates.single_expression(value) is None:
        raise _problem(
            "expected exactly one template expression such as \"{{ steps.review.approved }}\""
            " (any other text would always count as true)"
        )
    return value


Expression = Annotated[
    str | bool,
    BeforeValidator(_check_expression),
    WithJsonSchema(
        {
            "anyOf": [{"type": "boolean"}, {"type": "string", "pattern": r"^\s*\{\{.*\}\}\s*$"}],
            "description": "true, false, or exactly one {{ expression }}",
        }
    ),
]


def _check_items(value: Any) -> Any:
    """`foreach`: a literal list, or exactly one `{{ expression }}` that yields a list."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError("a list or a template such as \"{{ steps.find.output }}\"")
    problem = templates.check(value)
    if problem:
        raise _problem(problem)
    if templates.single_expression(value) is None:
        raise _problem(
            "expected exactly one template expression such as \"{{ steps.find.output }}\""
            " (text around it would make a string, not a list)"
        )
    return value


Items = Annotated[
    str | list[Any],
    BeforeValidator(_check_items),
    WithJsonSchema(
        {
            "anyOf": [{"type": "array"}, {"type": "string", "pattern": r"^\s*\{\{.*\}\}\s*$"}],
            "description": "a list, or exactly one {{ expression }} that yields a list",
        }
    ),
]


def _check_until(value: Any) -> str:
    """`until`: an ISO 8601 time with an offset, or a template that renders to one at run time."""
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp as a datetime
        if value.tzinfo is None:
            raise ValueError("a time with an offset, such as 2026-01-05T09:00:00+01:00")
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError("an ISO 8601 time such as 2026-01-05T09:00:00+01:00, or a template")
    if any(marker in value for marker in ("{{", "{%")):
        return value
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("an ISO 8601 time such as 2026-01-05T09:00:00+01:00, or a template") from None
    if moment.tzinfo is None:
        raise ValueError("a time with an offset, such as 2026-01-05T09:00:00+01:00")
    return value.strip()


Until = Annotated[
    str,
    BeforeValidator(_check_until),
    WithJsonSchema(
        {"type": "string", "description": "an ISO 8601 time with offset, or a template rendering one"}
    ),
]


def _check_remind_at(value: Any) -> str:
    """`remind_at`: a share of the timeout (`80%`), a duration after the request, or `never`."""
    percent_match = _PERCENT.match(value) if isinstance(value, str) else None
    if isinstance(value, str) and percent_match:
        percent = int(percent_match.group(1))
        if not 0 < percent < 100:
            raise ValueError("a percentage between 1% and 99%")
        return value.strip()
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        parse_duration(value, allow_never=True)
    except ValueError:
        raise ValueError("a share of the timeout such as 80%, a duration such as 2d, or 'never'") from None
    return str(value).strip()


RemindAt = Annotated[
    str,
    BeforeValidator(_check_remind_at),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d{1,2}\s*%\s*$"},
                *_DURATION_SCHEMA["anyOf"],
                {"const": NEVER},
            ],
            "description": "a share of the timeout such as 80%, a duration such as 2d, or 'never'",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- triggers --------------------------------------------------------------------------------


class ScheduleTrigger(_Strict):
    """Start a run at every slot of a cron schedule, read in `timezone`."""

    kind: ClassVar[str] = "schedule"
    schedule: str = Field(description="cron with 5 fields: minute hour day month weekday")
    timezone: str | None = Field(
        default=None, description="IANA time zone; default: the workspace's (UTC unless configured)"
    )
    overlap: Literal["skip", "queue", "allow"] = Field(
        default="skip", description="when a slot falls due while the previous run is still going"
    )
    catch_up: Duration = Field(
        default="1h", description="a slot missed by less than this runs once; older ones are skipped"
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        fields = value.split()
        alias = len(fields) == 1 and value.strip().startswith("@")
        if not (len(fields) == 5 or alias) or not croniter.is_valid(value):
            raise ValueError("a cron expression with 5 fields (minute hour day month weekday), such as '0 9 * * MON-FRI'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError("an IANA time zone name such as Europe/Amsterdam") from exc
        return value

    def zone(self, default: str = "UTC") -> ZoneInfo:
        """The zone the cron is read in; `default` is the workspace's zone."""
        return ZoneInfo(self.timezone or default)

    @property
    def catch_up_window(self) -> timedelta:
        return parse_duration(self.catch_up)


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


class ManualOptions(_Strict):
    """`manual: {}` has no options; the model exists so unknown keys are still refused."""


class ManualTrigger(_Strict):
    """Start a run from chat or `teammates workflow run` only."""

    kind: ClassVar[str] = "manual"
    manual: Annotated[ManualOptions, BeforeValidator(_none_is_empty)]


class WebhookOptions(_Strict):
    secret: str = Field(
        min_length=1,
        description="HMAC-SHA256 key for X-Teammates-Signature (v1); usually \"${VAR}\"",
    )


class WebhookTrigger(_Strict):
    """Start a run from `POST /hooks/{workflow}`; the JSON body is the run's input."""

    kind: ClassVar[str] = "webhook"
    webhook: WebhookOptions


class EventOptions(_Strict):
    name: EventName
    member: MemberId | None = Field(default=None, description="only events of this member")


class EventTrigger(_Strict):
    """Start a run when the system emits an event, such as `approval.decided`."""

    kind: ClassVar[str] = "event"
    event: EventOptions


_TRIGGER_TAGS = {
    "schedule": "schedule trigger",
    "manual": "manual trigger",
    "webhook": "webhook trigger",
    "event": "event trigger",
}


def _trigger_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [key for key in _TRIGGER_TAGS if key in value]
        return _TRIGGER_TAGS[found[0]] if len(found) == 1 else None
    kind = getattr(value, "kind", None)
    return _TRIGGER_TAGS.get(kind) if isinstance(kind, str) else None


Trigger = Annotated[
    Union[  # noqa: UP007  (pydantic needs the tagged members spelled out)
        Annotated[ScheduleTrigger, Tag("schedule trigger")],
        Annotated[ManualTrigger, Tag("manual trigger")],
        Annotated[WebhookTrigger, Tag("webhook trigger")],
        Annotated[EventTrigger, Tag("event trigger")],
    ],
    Discriminator(
        _trigger_tag,
        custom_error_type="trigger_kind",
        custom_error_message="exactly one of schedule, manual, webhook or event",
    ),
]


# --- steps -----------------------------------------------------------------------------------


class RetryPolicy(_Strict):
    """Retries of a failed step: `max` more attempts, waiting `backoff * factor**(n-1)`."""

    max: int = Field(ge=0, description="retries after the first attempt")
    backoff: Duration = Field(default="10s", description="wait before the first retry")
    factor: float = Field(default=2.0, ge=1.0, description="each later wait is this many times longer")

    def delay(self, retry: int) -> timedelta:
        """The wait before retry number `retry` (1 is the first retry)."""
        return parse_duration(self.backoff) * (self.factor ** max(retry - 1, 0))


class _StepBase(_Strict):
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


class PostMessage(_Strict):
    channel: str = Field(min_length=1, description="channel id (or a template giving one)")
    text: str
    thread_ts: str | None = None
    platform: Platform | None = Field(default=None, description="default: where the workflow was created")


class PostStep(_StepBase):
    """Post a message as the workflow's member."""

    kind: ClassVar[str] = "post"
    post: PostMessage


class ApprovalRequest(_Strict):
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
    to: str = Field(default="thread", min_length=1, description="thread, dm, or a channel id")
    platform: Platform | None = Field(default=None, description="default: where the workflow was created")

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalRequest:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise _problem("escalate_to: required when on_timeout is escalate")
        if self.escalate_to and self.on_timeout != "escalate":
            raise _problem("escalate_to: only used when on_timeout is escalate")
        timeout = self.timeout_delta
        if "remind_at" in self.model_fields_set and _PERCENT.match(self.remind_at) and timeout is None:
            raise _problem("remind_at: a percentage needs a timeout; with timeout never use a duration such as 3d")
        remind = self.remind_after
        if remind is not None and timeout is not None and remind >= timeout:
            raise _problem("remind_at: must come before the timeout")
        return self

    @property
    def timeout_delta(self) -> timedelta | None:
        """How long the request stays open; None for `never`."""
        return parse_duration(self.timeout, allow_never=True)

    @property
    def remind_after(self) -> timedelta | None:
        """When, after the request, approvers are reminded; None for no reminder."""
        match = _PERCENT.match(self.remind_at)
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
            raise _problem("a wait step has exactly one of wait or until")
        return self

    @property
    def wait_delta(self) -> timedelta | None:
        return None if self.wait is None else parse_duration(self.wait)


class Condition(_Strict):
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


class Handoff(_Strict):
    member: MemberId
    message: str | None = None
    workflow: Slug | None = Field(default=None, description="start this workflow of the member")
    input: dict[str, Any] | None = Field(default=None, description="input of that workflow's run")

    @model_validator(mode="after")
    def _input_needs_workflow(self) -> Handoff:
        if self.input is not None and self.workflow is None:
            raise _problem("input: only used with workflow")
        return self


class HandoffStep(_StepBase):
    """Hand the work to another member: a message, or a run of one of its workflows."""

    kind: ClassVar[str] = "handoff"
    handoff: Handoff


_STEP_KEYS = {
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
        found = [key for key in _STEP_KEYS if key in value]
        if len(found) > 1:
            found = [key for key in found if value[key] is not None]
        return _STEP_KEYS[found[0]] if len(found) == 1 else None
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


# --- the workflow ----------------------------------------------------------------------------

InputType = Literal["string", "integer", "number", "boolean", "list", "object"]


def _is_a(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = {"string": str, "boolean": bool, "list": list, "object": dict}[kind]
    return isinstance(value, expected)


class WorkflowInput(_Strict):
    """One input of a run (`inputs.<name>` in templates)."""

    name: Identifier
    type: InputType
    default: Any = None
    required: bool = Field(default=False, description="default: true when the input has no default")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _required_unless_defaulted(cls, data: Any) -> Any:
        if isinstance(data, dict) and "required" not in data:
            return {**data, "required": "default" not in data}
        return data

    @model_validator(mode="after")
    def _default_has_type(self) -> WorkflowInput:
        if self.default is not None and not _is_a(self.type, self.default):
            raise _problem(f"default: expected a value of type {self.type} (found {self.default!r})")
        return self


class WorkflowDefinition(_Strict):
    """A workflow as its owner wrote it. Invariants after validation: step ids are unique in
    the whole workflow, every template string parses, every duration and cron reads."""

    model_config = ConfigDict(title="teammates workflow definition")

    name: Slug = Field(description="unique per workspace")
    member: MemberId = Field(description="the member that owns and runs the workflow")
    description: str = ""
    trigger: Trigger
    autonomy: Literal["notify", "approve", "auto"] | None = Field(
        default=None, description="default: the member's autonomy (approve unless configured)"
    )
    inputs: list[WorkflowInput] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _whole_document(self) -> WorkflowDefinition:
        names = [i.name for i in self.inputs]
        for name in names:
            if names.count(name) > 1:
                raise _problem(f"inputs[{name}]: the name {name!r} is used twice; input names must be unique")
        seen: set[str] = set()
        walked = list(_walk(self.steps, "", "steps"))
        for _, where, step in walked:
            if step.id in seen:
                raise _problem(f"{where}.id: {step.id!r} is used twice; step ids must be unique in the workflow")
            seen.add(step.id)
        for _, where, step in walked:
            for key, text in _template_strings(step):
                problem = templates.check(text)
                if problem:
                    raise _problem(f"{where}.{key}: {problem}")
        return self


def as_document(definition: WorkflowDefinition) -> dict[str, Any]:
    """The definition as a JSON-able document with only the keys its author wrote (defaults
    stay implicit), which `load_definition` reads back to an equal definition — the form to store
    as a workflow version."""
    return definition.model_dump(mode="json", by_alias=True, exclude_unset=True)


def iter_steps(definition: WorkflowDefinition) -> Iterator[tuple[str, Step]]:
    """Every step with its path (see the module docstring), parents before their children,
    in document order."""
    for path, _, step in _walk(definition.steps, "", "steps"):
        yield path, step


def load_definition(text: str, *, source: str = "<workflow>") -> WorkflowDefinition:
    """Parse YAML or JSON text and validate it; raises `DefinitionError` (one line)."""
    raw = _parse(text, source)
    if not isinstance(raw, dict):
        raise DefinitionError(f"{source}: expected a mapping with name, member, trigger and steps at the top level")
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        raise DefinitionError(_one_line(f"{source}: {_describe(exc, raw)}")) from None
    misplaced = secret_placement(definition)
    if misplaced:
        raise DefinitionError(_one_line(f"{source}: {misplaced[0]}"))
    return definition


def secret_placement(definition: WorkflowDefinition) -> list[str]:
    """Every place the definition reads `secrets` other than a tool step's `args` (one line
    each, naming the step and key); empty when secrets are only where they may go.

    Checked on Jinja's syntax tree (`secrets['X']`, `secrets | list`, `{% set s = secrets %}`
    count too). Not part of model validation on purpose: versions stored before this check
    still load, and at run time every template outside tool args reads a view that refuses."""
    problems: list[str] = []
    rest = as_document(definition)
    rest.pop("steps", None)
    for key, text in _strings(rest, ""):
        if templates.reads_secrets(text):
            problems.append(f"{key}: {_SECRETS_ONLY_IN_TOOL_ARGS}")
    for _, where, step in _walk(definition.steps, "", "steps"):
        for key, text in _template_strings(step):
            in_args = isinstance(step, ToolStep) and (key == "args" or key.startswith(("args.", "args[")))
            if not in_args and templates.reads_secrets(text):
                problems.append(f"{where}.{key}: {_SECRETS_ONLY_IN_TOOL_ARGS}")
    return problems


_SECRETS_ONLY_IN_TOOL_ARGS = (
    "reads secrets, which may only be used in a tool step's args (never in a message, prompt, "
    "approval, handoff, condition or input)"
)


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of the format (draft 2020-12), generated from the models."""
    schema = WorkflowDefinition.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- internals -------------------------------------------------------------------------------


def _walk(steps: list[Step], path_prefix: str, doc_prefix: str) -> Iterator[tuple[str, str, Step]]:
    """(path, document path, step) for `steps` and everything nested in them."""
    for step in steps:
        path = f"{path_prefix}{step.id}"
        where = f"{doc_prefix}[{step.id}]"
        yield path, where, step
        for child_path, child_where, children in _branches(step, path, where):
            yield from _walk(children, f"{child_path}/", child_where)


def _branches(step: Step, path: str, where: str) -> Iterator[tuple[str, str, list[Step]]]:
    if isinstance(step, ForeachStep):
        yield path, f"{where}.steps", step.steps
    elif isinstance(step, ConditionStep):
        yield f"{path}/then", f"{where}.condition.then", step.condition.then
        yield f"{path}/else", f"{where}.condition.else", step.condition.else_
    elif isinstance(step, ParallelStep):
        for index, branch in enumerate(step.parallel):
            yield f"{path}/{index}", f"{where}.parallel[{index}]", branch


def _template_strings(step: Step) -> Iterator[tuple[str, str]]:
    """(key, text) for every string the step itself holds; nested steps are walked on their own."""
    nested: dict[str, Any] = {"foreach": {"steps"}, "parallel": {"parallel"}, "condition": {"condition": {"then", "else_"}}}
    data = step.model_dump(by_alias=True, exclude=nested.get(step.kind))
    data.pop("id", None)
    yield from _strings(data, "")


def _strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse(text: str, source: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # a YAML flow mapping starts with '{' too
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise DefinitionError(_one_line(f"{source}: not valid YAML or JSON{at}: {getattr(exc, 'problem', exc)}")) from None


_TAGS = frozenset(_STEP_KEYS.values()) | frozenset(_TRIGGER_TAGS.values())
_TAG_MODELS: dict[str, type[BaseModel]] = {
    "agent step": AgentStep,
    "tool step": ToolStep,
    "post step": PostStep,
    "approval step": ApprovalStep,
    "wait step": WaitStep,
    "condition step": ConditionStep,
    "foreach step": ForeachStep,
    "parallel step": ParallelStep,
    "handoff step": HandoffStep,
    "schedule trigger": ScheduleTrigger,
    "manual trigger": ManualTrigger,
    "webhook trigger": WebhookTrigger,
    "event trigger": EventTrigger,
}
_PLAIN = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "string_too_short": "a non-empty string",
}
_KEY_FIRST = re.compile(r"^[a-z_]+: ")


def _describe(exc: ValidationError, raw: Any) -> str:
    """One line for the first error: the document path, what was expected, and what was found."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    where, node = _locate(loc, raw)
    prefix = f"{where}: " if where else ""
    kind = err["type"]
    if kind == "workflow":
        message = str(err["msg"])
        if where and _KEY_FIRST.match(message):  # "escalate_to: ..." from a model's own check
            return f"{where}.{message}"
        return f"{prefix}{message}"
    if kind == "extra_forbidden":
        return f"{prefix}unknown key{_allowed(loc)}"
    if kind == "missing":
        return f"{prefix}required but missing"
    if kind == "step_kind":
        return f"{prefix}{_kind_problem(node, 'step', list(_STEP_KEYS))}"
    if kind == "trigger_kind":
        return f"{prefix}{_kind_problem(node, 'trigger', list(_TRIGGER_TAGS))}"
    if kind == "greater_than_equal":
        return f"{prefix}expected at least {err.get('ctx', {}).get('ge')}{_found(err, where)}"
    if kind == "less_than_equal":
        return f"{prefix}expected at most {err.get('ctx', {}).get('le')}{_found(err, where)}"
    if kind == "too_short":
        return f"{prefix}expected at least {err.get('ctx', {}).get('min_length', 1)} item(s)"
    shown = _found(err, where)
    if kind in _PLAIN:
        return f"{prefix}expected {_PLAIN[kind]}{shown}"
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
    return f"{prefix}expected {message}{shown}"


def _found(err: Any, where: str) -> str:
    """' (found ...)' for a short scalar, never for a secret."""
    found = err.get("input")
    if any(word in where for word in ("secret", "token", "password")):
        return ""
    if not isinstance(found, str | int | float | bool):
        return ""
    text = repr(found)
    return f" (found {text if len(text) <= 60 else text[:57] + '...'})"


def _locate(loc: tuple[Any, ...], raw: Any) -> tuple[str, Any]:
    """The document path of `loc` (`steps[remind].steps[draft].retry`) and the raw value there.

    List entries are named by their `id` (steps) or `name` (inputs) when they have one; the
    union tags pydantic adds to the location are dropped.
    """
    where = ""
    node = raw
    previous: Any = None
    for item in loc:
        if isinstance(item, str) and item in _TAGS and (isinstance(previous, int) or previous == "trigger"):
            previous = item
            continue
        if isinstance(item, int):
            child = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            label: Any = item
            if isinstance(child, dict):
                named = child.get("id", child.get("name"))
                if isinstance(named, str) and named:
                    label = named
            where += f"[{label}]"
        else:
            child = node.get(item) if isinstance(node, dict) else None
            where += f".{item}" if where else str(item)
        node = child
        previous = item
    return where, node


def _allowed(loc: tuple[Any, ...]) -> str:
    """'; expected one of: ...' for the model that refused the last key, with a close match."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    keys = [field.alias or name for name, field in model.model_fields.items()]
    hint = get_close_matches(str(loc[-1]), keys, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{suggestion}; expected one of: {', '.join(keys)}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = WorkflowDefinition
    for item in loc:
        if isinstance(item, str) and item in _TAG_MODELS:
            current = _TAG_MODELS[item]
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {field.alias or name: field for name, field in current.model_fields.items()}
            if item not in fields:
                return None
            current = fields[item].annotation
        elif get_origin(current) is list and isinstance(item, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Drop `Annotated` and `| None`; a real union (the step kinds) is left for its tag."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _kind_problem(node: Any, what: str, keys: list[str]) -> str:
    expected = ", ".join(keys)
    if not isinstance(node, dict):
        return f"expected a {what}: a mapping with exactly one of {expected}"
    found = [key for key in keys if key in node]
    if len(found) > 1:
        found = [key for key in found if node[key] is not None] or found
    if not found:
        return f"no {what} kind; expected exactly one of: {expected}"
    listed = " and ".join(repr(key) for key in found)
    return f"found {listed}; a {what} has exactly one of: {expected}"


def _one_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", message).strip()


def main() -> None:
    """Print the JSON Schema (the `python -m jobs.workflows.definition` entry)."""
    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
