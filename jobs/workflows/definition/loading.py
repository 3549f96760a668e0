"""Reading a definition from user text: YAML (refusing a key given twice) or JSON, validated
into a `WorkflowDefinition`, every problem turned into one `DefinitionError` line.

The line names the source, where in the document (`steps[remind].steps[draft].retry.max` — steps
by their id, other list entries by name or index), and what was expected. Everything that can be
known before a run is checked — cron, time zone, durations, template syntax, unique step ids — so
a broken workflow fails at `teammates workflow apply`, not at 9:00 on Monday.
"""

from __future__ import annotations

import json
import re
import types
from difflib import get_close_matches
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from jobs.workflows.definition.steps import (
    STEP_KEYS,
    AgentStep,
    ApprovalStep,
    ConditionStep,
    ForeachStep,
    HandoffStep,
    ParallelStep,
    PostStep,
    ToolStep,
    WaitStep,
)
from jobs.workflows.definition.triggers import (
    TRIGGER_TAGS,
    EventTrigger,
    ManualTrigger,
    ScheduleTrigger,
    WebhookTrigger,
)
from jobs.workflows.definition.workflow import WorkflowDefinition, secret_placement


class DefinitionError(Exception):
    """A user error in a workflow definition; its message is one line a person can act on."""


MAX_TEXT = 1_000_000  # characters of one definition
MAX_NESTING = 64  # levels of lists and mappings: far beyond any real workflow


def load_definition(text: str, *, source: str = "<workflow>") -> WorkflowDefinition:
    """Parse YAML or JSON text and validate it; raises `DefinitionError` (one line).

    Hostile text costs bounded time and memory: its size and nesting are bounded, and YAML
    anchors and aliases (a "billion laughs" expands exponentially when walked) are refused."""
    if len(text) > MAX_TEXT:
        raise DefinitionError(f"{source}: {len(text):,} characters, more than a definition may have ({MAX_TEXT:,})")
    if _bracket_depth(text) > 4 * MAX_NESTING:  # before parsing: PyYAML recurses per level
        raise DefinitionError(f"{source}: nested more than {MAX_NESTING} levels deep")
    raw = _parse(text, source)
    if _nesting(raw) > MAX_NESTING:
        raise DefinitionError(f"{source}: nested more than {MAX_NESTING} levels deep")
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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last), and
    anchors and aliases: a few lines of aliases can stand for billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (*name) are not supported", event.start_mark)
        return super().compose_node(parent, index)


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
        except RecursionError:
            raise DefinitionError(f"{source}: nested more than {MAX_NESTING} levels deep") from None
        except json.JSONDecodeError:
            pass  # a YAML flow mapping starts with '{' too
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no Python objects
    except RecursionError:
        raise DefinitionError(f"{source}: nested more than {MAX_NESTING} levels deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise DefinitionError(_one_line(f"{source}: not valid YAML or JSON{at}: {getattr(exc, 'problem', exc)}")) from None


_BRACKETS = re.compile(r"[\[\]{}]")


def _bracket_depth(text: str) -> int:
    """How deep `[`/`{` open in the raw text, counting brackets inside strings too: an upper
    bound on flow-style nesting, found in one pass, so thousands of levels are refused before
    the YAML parser spends a second recursing into them (the limit is generous: see caller)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(text):
        depth = depth + 1 if bracket in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _nesting(value: Any) -> int:
    """How deep lists and mappings nest in `value` (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_NESTING:
                    return depth + 1
                deepest = max(deepest, depth + 1)
                stack.append((child, depth + 1))
    return max(deepest, 1 if isinstance(value, dict | list) else 0)


_TAGS = frozenset(STEP_KEYS.values()) | frozenset(TRIGGER_TAGS.values())
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
        return f"{prefix}{_kind_problem(node, 'step', list(STEP_KEYS))}"
    if kind == "trigger_kind":
        return f"{prefix}{_kind_problem(node, 'trigger', list(TRIGGER_TAGS))}"
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
