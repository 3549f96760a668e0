"""What an LLM call costs, from `llm.prices` (per million tokens, in the workspace currency)."""

from __future__ import annotations

from agents.turns import Usage
from teammates.config import Price


def tokens(u: Usage) -> int:
    """Every token a call is billed for: input, output, cache reads and writes."""
    return u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens


def cost(price: Price | None, u: Usage) -> float:
    if price is None:
        return 0.0
    read = price.cache_read if price.cache_read is not None else price.input * 0.1
    write = price.cache_write if price.cache_write is not None else price.input * 1.25
    return (u.input_tokens * price.input + u.output_tokens * price.output + u.cache_read_tokens * read
            + u.cache_write_tokens * write) / 1_000_000


def worst_cost(price: Price | None, input_tokens: int, max_tokens: int) -> float:
    """The most a call with this input and `max_tokens` can cost: every input token at the
    dearest input rate (a cache write costs more than plain input)."""
    if price is None:
        return 0.0
    write = price.cache_write if price.cache_write is not None else price.input * 1.25
    return (input_tokens * max(price.input, write) + max_tokens * price.output) / 1_000_000
