"""Tools described by configuration rather than code: their input is a JSON Schema given in
`teammates.yml`, checked here before the tool runs (model output is untrusted input)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.tools.context import ToolContext
from agents.tools.registry import Tool, ToolError


class AnyInput(BaseModel):
    """Placeholder input model: a configured tool validates against its JSON Schema instead."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class ConfiguredTool(Tool[AnyInput]):
    """A tool whose input is a JSON Schema; `run` gets the validated input as a dict."""

    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    handler: Callable[[ToolContext, dict[str, Any]], Awaitable[Any]] | None = None

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    def parse(self, raw_input: Any) -> AnyInput:
        """Validate against the JSON Schema (first problem, as one line)."""
        import jsonschema

        data = {} if raw_input is None else raw_input
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(self.input_schema).iter_errors(data))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "input"
            raise ToolError(f"invalid input for {self.name}: {where}: {error.message}")
        if not isinstance(data, dict):
            raise ToolError(f"invalid input for {self.name}: input: expected an object")
        return AnyInput.model_validate(data)

    async def call(self, ctx: ToolContext, raw_input: Any) -> Any:
        """Validate, then run with the input as the model sent it (a dict)."""
        data = self.parse(raw_input).model_dump()
        assert self.handler is not None
        return await self.handler(ctx, dict(data))


def configured_tool(name: str, description: str, input_schema: dict[str, Any], effect: bool,
                    handler: Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]) -> ConfiguredTool:
    async def unused(ctx: ToolContext, args: AnyInput) -> Any:  # `call` goes to `handler`
        return await handler(ctx, args.model_dump())

    return ConfiguredTool(name=name, description=description, input_model=AnyInput, run=unused, effect=effect,
                          input_schema=input_schema, handler=handler)
