"""The whole workflow: its inputs, `WorkflowDefinition` with the checks that span steps, the
walk over its steps, where secrets may be read, the stored form, and the published JSON Schema.

Step paths (`iter_steps`): the ids from the top-level step down to the step, joined by `/`.
A `foreach` adds its children directly (`remind/draft`), a `condition` adds the branch name
(`branch/then/notify`, `branch/else/log`), a `parallel` adds the branch number from 0
(`fan/1/summarize`). Ids are unique in the whole workflow, so the last segment alone identifies a
step; the rest says where it sits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from jobs.workflows import templates
from jobs.workflows.definition.fields import Identifier, MemberId, Slug, Strict, problem_error
from jobs.workflows.definition.steps import (
    ConditionStep,
    ForeachStep,
    ParallelStep,
    Step,
    ToolStep,
)
from jobs.workflows.definition.triggers import Trigger

InputType = Literal["string", "integer", "number", "boolean", "list", "object"]


def _is_a(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = {"string": str, "boolean": bool, "list": list, "object": dict}[kind]
    return isinstance(value, expected)


class WorkflowInput(Strict):
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
            raise problem_error(f"default: expected a value of type {self.type} (found {self.default!r})")
        return self


class WorkflowDefinition(Strict):
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
                raise problem_error(f"inputs[{name}]: the name {name!r} is used twice; input names must be unique")
        seen: set[str] = set()
        walked = list(_walk(self.steps, "", "steps"))
        for _, where, step in walked:
            if step.id in seen:
                raise problem_error(f"{where}.id: {step.id!r} is used twice; step ids must be unique in the workflow")
            seen.add(step.id)
        for _, where, step in walked:
            for key, text in _template_strings(step):
                problem = templates.check(text)
                if problem:
                    raise problem_error(f"{where}.{key}: {problem}")
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



def secret_placement(definition: WorkflowDefinition) -> list[str]:
    """Every place the definition reads `secrets` other than a tool step's `args` (one line
    each, naming the step and key); empty when secrets are only where they may go.

    Checked on Jinja's syntax tree (`secrets['X']`, `secrets | list`, `{% set s = secrets %}`
    count too). Not part of model validation on purpose: versions stored before this check
    still load, and at run time every template outside tool args reads a view that refuses."""
    problems: list[str] = []
    rest = as_document(definition)
    rest.pop("steps", None)
    for key, text in strings(rest, ""):
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
    yield from strings(data, "")


def strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every string inside `value` with its dotted key (`post.text`, `args.items[2]`)."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, f"{key}[{i}]")

