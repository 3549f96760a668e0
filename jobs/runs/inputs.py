"""A run's input: the workflow's declared inputs, with defaults and text converted to types."""

from __future__ import annotations

import json
from typing import Any

from jobs.workflows.definition import WorkflowDefinition


class InputError(ValueError):
    """A run's input does not match the workflow's declared inputs."""


def resolve_inputs(definition: WorkflowDefinition, given: dict[str, Any]) -> dict[str, Any]:
    """Declared inputs with defaults applied and text values converted to their types."""
    declared = {i.name: i for i in definition.inputs}
    unknown = sorted(set(given) - set(declared))
    if unknown and declared:
        raise InputError(f"unknown input {unknown[0]!r} (inputs: {', '.join(declared)})")
    values = dict(given)
    for name, spec in declared.items():
        if name not in values:
            if spec.required and spec.default is None:
                raise InputError(f"input {name!r} is required")
            values[name] = spec.default
            continue
        values[name] = _convert(name, spec.type, values[name])
    return values


def _convert(name: str, kind: str, value: Any) -> Any:
    if not isinstance(value, str) or kind == "string":
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            if value.lower() in ("true", "yes", "1"):
                return True
            if value.lower() in ("false", "no", "0"):
                return False
            raise ValueError(value)
        if kind in ("list", "object"):
            return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        raise InputError(f"input {name!r}: expected {kind}, got {value!r}") from None
    return value
