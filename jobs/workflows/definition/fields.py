"""The value types of the workflow format: names, durations, templates and times, each a
validated `Annotated` type with its JSON Schema, and `Strict`, the base of every model.

A value that cannot be right is refused here, when the definition is loaded, so no run meets it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

from jobs.workflows import templates
from jobs.workflows.durations import EXPECTED as DURATION_EXPECTED
from jobs.workflows.durations import NEVER, PATTERN, parse_duration

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MEMBER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# No '-' in step ids: templates read `steps.<id>.output`, and Jinja reads `steps.send-mail` as a
# subtraction. Letters, digits and '_' are still url-safe (and allowed in RQ job ids).
_STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
PERCENT = re.compile(r"^\s*(\d{1,2})\s*%\s*$")


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


def problem_error(message: str) -> PydanticCustomError:
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
        raise problem_error(problem)
    if templates.single_expression(value) is None:
        raise problem_error(
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
        raise problem_error(problem)
    if templates.single_expression(value) is None:
        raise problem_error(
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
    percent_match = PERCENT.match(value) if isinstance(value, str) else None
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
