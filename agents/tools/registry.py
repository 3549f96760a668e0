"""The tool registry: a tool is a typed async function whose pydantic input model becomes the
JSON schema Claude sees. Members list the tools they may use by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from agents.tools.context import ToolContext

In = TypeVar("In", bound=BaseModel)


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model as the result."""


@dataclass(frozen=True)
class Tool(Generic[In]):
    name: str
    description: str
    input_model: type[In]
    run: Callable[[ToolContext, In], Awaitable[Any]]
    effect: bool = False  # changes the world outside the team: approval-gated, idempotency-keyed

    def schema(self) -> dict[str, Any]:
        """The tool definition for the Messages API."""
        schema = self.input_model.model_json_schema()
        schema.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": schema}

    def parse(self, raw_input: Any) -> In:
        """The model's input, validated; bad input is a ToolError naming the field."""
        try:
            return self.input_model.model_validate(raw_input)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "input"
            raise ToolError(f"invalid input for {self.name}: {where}: {first['msg']}") from None

    async def call(self, ctx: ToolContext, raw_input: Any) -> Any:
        """Validate the model's input, then run; bad input is a ToolError, not a crash."""
        return await self.run(ctx, self.parse(raw_input))


_REGISTRY: dict[str, Tool[Any]] = {}
_CONFIGURED: set[str] = set()  # names installed from the configuration (replaced as a set)


def register(name: str, description: str, input_model: type[In], *, effect: bool = False) -> Callable[[Callable[[ToolContext, In], Awaitable[Any]]], Tool[In]]:
    """Decorator: add an async function to the registry under `name`."""

    def wrap(fn: Callable[[ToolContext, In], Awaitable[Any]]) -> Tool[In]:
        if name in _REGISTRY:
            raise ValueError(f"tool {name!r} registered twice")
        tool = Tool(name=name, description=description, input_model=input_model, run=fn, effect=effect)
        _REGISTRY[name] = tool
        return tool

    return wrap


def install_configured(tools: list[Tool[Any]]) -> None:
    """Make `tools` the process's tools from configuration, replacing those installed before
    (a config loaded again drops the tools it no longer lists). Raises ValueError, changing
    nothing, when a name is a tool registered in code (a built-in) or given twice."""
    _load_builtin()
    fresh = {tool.name: tool for tool in tools}
    given = [tool.name for tool in tools]
    for name in given:
        if name in _REGISTRY and name not in _CONFIGURED:
            raise ValueError(f"{name!r} is the name of a built-in tool; choose another name")
        if given.count(name) > 1:
            raise ValueError(f"{name!r} is given twice")
    for name in _CONFIGURED:
        _REGISTRY.pop(name, None)
    _REGISTRY.update(fresh)
    _CONFIGURED.clear()
    _CONFIGURED.update(fresh)


def known_tools() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def resolve(names: Iterable[str]) -> list[Tool[Any]]:
    """The tools with these names; an unknown name is a config error the caller reports."""
    _load_builtin()
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise KeyError(unknown[0])
    return [_REGISTRY[n] for n in names]


def _load_builtin() -> None:
    import agents.tools.builtin  # noqa: F401  (registers on import)
