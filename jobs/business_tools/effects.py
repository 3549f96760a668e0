"""Business tools that change the outside world do so at most once per effect id.

The record is written `started` before the tool acts and `done` with its answer after; a
retried turn or step that finds `done` returns the stored answer without acting again, and one
that finds `started` acts again under the same id (an HTTP tool's `Idempotency-Key`, an
email's `Message-ID`), so the other side can tell the repeat. What is recorded holds no secret:
the intent is the model's (or the step's, redacted) input, the answer is what the model saw."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents.tools.context import ToolContext


async def once(ctx: ToolContext, tool: str, kind: str, intent: dict[str, Any],
               act: Callable[[str], Awaitable[Any]]) -> Any:
    """`act(effect_id)` unless this call's effect is recorded `done`; its answer either way.

    The id counts per tool name, not per kind: a retried turn whose model calls its tools in
    another order still matches each tool's Nth call to that tool's Nth record."""
    if ctx.effects is None:  # nothing to guard (no retry): still a stable, distinct id
        return await act(f"{ctx.run_id}-{ctx.call_id}" if ctx.call_id else ctx.run_id)
    effect_id = ctx.effects.next_id(tool)
    status, stored, _ = await ctx.effects.begin(effect_id, kind, {"tool": tool, **intent})
    if status == "done":
        return stored.get("answer")
    answer = await act(effect_id)
    await ctx.effects.finish(effect_id, {"tool": tool, **intent, "answer": answer})
    return answer
