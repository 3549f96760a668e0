"""What of a business tool's answer reaches the model: the `returns` selection (JMESPath),
then a size cap, so one large answer cannot crowd out the conversation (or its budget)."""

from __future__ import annotations

import functools
import json
from typing import Any

MAX_BODY_BYTES = 1_000_000  # read at most this much of an HTTP answer
MAX_ANSWER_CHARS = 8_000  # what reaches the model, after selection


@functools.lru_cache(maxsize=256)
def _compiled(expression: str) -> Any:
    import jmespath

    return jmespath.compile(expression)


def select(value: Any, returns: str | None) -> Any:
    """The part of `value` named by the JMESPath `returns` (all of it without one)."""
    return value if returns is None else _compiled(returns).search(value)


def capped(value: Any) -> Any:
    """`value` itself when its text fits `MAX_ANSWER_CHARS` (a step's output keeps its type);
    else its first characters as text, with a note saying it was cut and how big it was."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_ANSWER_CHARS:
        return value
    return (text[:MAX_ANSWER_CHARS] + f"\n[cut: the answer was {len(text):,} characters; only the first "
            f"{MAX_ANSWER_CHARS:,} are shown. Ask for less (a filter, a smaller page) if you need the rest.]")
