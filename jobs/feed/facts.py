"""What a finished step's activity row keeps for its feed line (`jobs.feed.lines`): its kind,
and for a post or a tool step where it went and what it was about. Small on purpose: the
scalar fields of the foreach item it ran for (a client's name, an invoice number), never the
step's whole input or output."""

from __future__ import annotations

from typing import Any

from jobs.workflows.definition import PostStep, Step, ToolStep

MAX_FIELDS = 12
MAX_CHARS = 200


def of_step(step: Step, item: Any, output: Any) -> dict[str, Any]:
    if isinstance(step, PostStep):
        return {"kind": "post", "channel": output.get("channel") if isinstance(output, dict) else None}
    if isinstance(step, ToolStep):
        return {"kind": "tool", "tool": step.tool, "about": about(item)}
    return {"kind": step.kind}


def about(item: Any) -> dict[str, Any]:
    """The scalar fields of a foreach item (the item itself when it is a scalar)."""
    if isinstance(item, dict):
        scalars = [(str(k), _short(v)) for k, v in item.items() if isinstance(v, str | int | float) and not isinstance(v, bool)]
        return dict(scalars[:MAX_FIELDS])
    if isinstance(item, str | int | float) and not isinstance(item, bool):
        return {"item": _short(item)}
    return {}


def _short(value: Any) -> Any:
    return value[:MAX_CHARS] if isinstance(value, str) else value
