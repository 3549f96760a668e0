"""One turn of a member: the Claude Messages tool-use loop.

The conversation comes from our database, never from the platform. The loop is bounded by
`max_iterations`; a tool that fails reports its error to the model as an `is_error` result
instead of breaking the turn. Every call goes through the `meter`: it reserves the call's worst
case before it is made (or refuses it: `OverBudget`, and the call is not made) and settles to
the real usage as soon as it is known, so usage is recorded even when a later call fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anthropic

from agents.tools.context import ToolContext
from agents.tools.registry import Tool, ToolError

log = logging.getLogger(__name__)

MAX_TOOL_RESULT_CHARS = 20_000


class LlmUnavailable(Exception):
    """The model could not be reached or refused (rate limit, overload, timeout, outage)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class OverBudget(Exception):
    """A budget has no room for the next call, which was not made. The message is for the
    person: which budget, when it resets, who can raise it."""

    def __init__(self, message: str, scope: str, period: str) -> None:
        super().__init__(message)
        self.scope, self.period = scope, period


class Meter(Protocol):
    async def reserve(self, request: dict[str, Any]) -> Any:
        """Before a call: reserve its worst case, or raise OverBudget. The ticket goes to settle."""

    async def settle(self, ticket: Any, usage: Usage | None) -> None:
        """After a call (None: it failed): record its usage and release what it reserved."""


@dataclass(frozen=True)
class Usage:
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True)
class TurnResult:
    text: str
    iterations: int
    tool_calls: list[str]


@dataclass(frozen=True)
class TurnSettings:
    model: str
    max_tokens: int
    max_iterations: int


async def run_turn(
    client: anthropic.AsyncAnthropic,
    settings: TurnSettings,
    system: list[dict[str, Any]],
    history: list[dict[str, Any]],
    tools: Sequence[Tool[Any]],
    ctx: ToolContext,
    meter: Meter,
) -> TurnResult:
    """Run the loop until the model stops asking for tools; return its final text."""
    messages = _with_cache_breakpoint(history)
    tool_defs = [t.schema() for t in tools]
    by_name = {t.name: t for t in tools}
    calls: list[str] = []
    for iteration in range(1, settings.max_iterations + 1):
        request = _request(settings, system, messages, tool_defs)
        ticket = await meter.reserve(request)
        try:
            response = await _create(client, request)
        except BaseException:
            await meter.settle(ticket, None)
            raise
        await meter.settle(ticket, _usage(settings.model, response.usage))
        content = [block.model_dump(exclude_none=True) for block in response.content]
        text = "".join(block.text for block in response.content if block.type == "text").strip()
        tool_uses = [block for block in response.content if block.type == "tool_use"]
        if response.stop_reason != "tool_use" or not tool_uses:
            return TurnResult(text=text or "(no answer)", iterations=iteration, tool_calls=calls)
        messages = [*messages, {"role": "assistant", "content": content}]
        results = []
        for use in tool_uses:
            calls.append(use.name)
            results.append(await _call_tool(by_name.get(use.name), replace(ctx, call_id=use.id), use.id, use.name, use.input))
        messages.append({"role": "user", "content": results})
    log.warning("turn stopped after %d tool rounds", settings.max_iterations, extra={"run_id": ctx.run_id, "member": ctx.member.id})
    return TurnResult(
        text="I went round in circles on this one and stopped. Could you narrow it down for me?",
        iterations=settings.max_iterations,
        tool_calls=calls,
    )


def _request(settings: TurnSettings, system: list[dict[str, Any]], messages: list[dict[str, Any]], tool_defs: list[dict[str, Any]]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": settings.model, "max_tokens": settings.max_tokens, "system": system, "messages": messages}
    if tool_defs:
        kwargs["tools"] = tool_defs
    return kwargs


async def _create(client: anthropic.AsyncAnthropic, kwargs: dict[str, Any]) -> Any:
    try:
        return await client.messages.create(**kwargs)
    except anthropic.RateLimitError as exc:
        raise LlmUnavailable("rate_limited", str(exc)) from exc
    except anthropic.APITimeoutError as exc:
        raise LlmUnavailable("timeout", str(exc)) from exc
    except anthropic.APIConnectionError as exc:
        raise LlmUnavailable("unreachable", str(exc)) from exc
    except anthropic.APIStatusError as exc:
        raise LlmUnavailable(f"http_{exc.status_code}", str(exc)) from exc


async def _call_tool(tool: Tool[Any] | None, ctx: ToolContext, use_id: str, name: str, raw_input: Any) -> dict[str, Any]:
    if tool is None:
        return _tool_result(use_id, f"there is no tool named {name}", error=True)
    try:
        tool.parse(raw_input)  # bad input is the model's to fix: it never reaches the gate (no card for it)
        held = await ctx.gate(tool, ctx, raw_input) if ctx.gate is not None else None
        if held is not None:  # the gate decided: the tool does not run in this call
            return _tool_result(use_id, held.message, error=held.error)
        output = await tool.call(ctx, raw_input)
    except ToolError as exc:
        return _tool_result(use_id, str(exc), error=True)
    except Exception:
        log.exception("tool %s failed", name, extra={"run_id": ctx.run_id, "member": ctx.member.id})
        return _tool_result(use_id, f"{name} failed unexpectedly; tell the person it did not work", error=True)
    rendered = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    if len(rendered) > MAX_TOOL_RESULT_CHARS:
        rendered = rendered[:MAX_TOOL_RESULT_CHARS] + f"\n[truncated: {len(rendered)} characters in all]"
    return _tool_result(use_id, rendered)


def _tool_result(use_id: str, text: str, *, error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": text}
    if error:
        block["is_error"] = True
    return block


def _with_cache_breakpoint(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the end of the stored history so the next turn reads it from the prompt cache."""
    if not history:
        raise ValueError("a turn needs at least one user message")
    *head, last = history
    content = last["content"]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return [*head, {**last, "content": blocks}]


def _usage(model: str, usage: Any) -> Usage:
    return Usage(
        model=model,
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
    )


def history_to_messages(lines: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """(role, text) pairs from the database as alternating Messages API turns.

    Consecutive lines of one role are joined (several people may write in a thread before the
    member answers), and the list always starts with a user turn."""
    merged: list[dict[str, Any]] = []
    for role, text in lines:
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] += "\n\n" + text
        else:
            merged.append({"role": role, "content": text})
    while merged and merged[0]["role"] != "user":
        merged.pop(0)
    return merged
