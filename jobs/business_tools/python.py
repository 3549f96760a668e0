"""Python business tools: a function named in the config (`module:function`) or an entry
point in the group `teammates.tools`, called with the model's validated input (a dict).

The function may be sync (run in a thread, so it cannot stall the worker's event loop) or
async. An effect function that takes an `effect_id` argument gets the call's effect id, the
same on every attempt: its idempotency key towards whatever it changes."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from agents.tools.context import ToolContext
from agents.tools.registry import ToolError
from jobs.business_tools import answers, effects

ENTRY_POINT_GROUP = "teammates.tools"


class NotFound(LookupError):
    """The configured function cannot be found; the message says what was looked for."""


def find(spec: str) -> Callable[..., Any]:
    """The function `spec` names: `package.module:function`, else an entry point's name."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise NotFound(f"cannot import module {module_name!r} ({exc})") from None
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part, None)
        if not callable(target):
            raise NotFound(f"module {module_name!r} has no function {attr!r}")
        return target  # type: ignore[no-any-return]
    found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
    if not found:
        raise NotFound(f"no entry point {spec!r} in group {ENTRY_POINT_GROUP!r} (or give module:function)")
    try:
        target = next(iter(found)).load()
    except Exception as exc:  # noqa: BLE001 - whatever importing the package raises is one line
        raise NotFound(f"entry point {spec!r} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not callable(target):
        raise NotFound(f"entry point {spec!r} is not a function")
    return target  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PythonTool:
    name: str
    function: Callable[..., Any]
    returns: str | None = None
    effect: bool = False

    async def __call__(self, ctx: ToolContext, data: dict[str, Any]) -> Any:
        if not self.effect:
            return await self._call(data, None)
        return await effects.once(ctx, self.name, "python", {"input": data}, lambda key: self._call(data, key))

    async def _call(self, data: dict[str, Any], effect_id: str | None) -> Any:
        kwargs = {"effect_id": effect_id} if effect_id is not None and _takes_effect_id(self.function) else {}
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(data, **kwargs)
        else:
            result = await asyncio.to_thread(self.function, data, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        try:
            return answers.capped(answers.select(result, self.returns))
        except Exception as exc:  # noqa: BLE001 - JMESPath on an answer of an unexpected shape
            raise ToolError(f"{self.name}: its answer does not fit `returns` ({type(exc).__name__})") from None


def _takes_effect_id(function: Callable[..., Any]) -> bool:
    try:
        return "effect_id" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
