"""Durations as people write them in workflow files: `10s`, `5m`, `2h`, `3d`, `1w`, `1h30m`.

A bare number (`90` or `"90"`) is seconds, so a JSON file can say `"timeout": 90`. `never` is a
duration only where the format allows it (an approval's timeout); everywhere else it is an error,
so a typo cannot silently turn a deadline off.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal, overload

NEVER = "never"
EXPECTED = "a duration such as 30s, 5m, 2h, 3d, 1w or 1h30m (a bare number is seconds)"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^(?:\d+\s*[smhdw]\s*)+$")

#: The JSON Schema `pattern` of a duration string; kept next to the parser so they agree.
PATTERN = r"^\s*(\d+|(\d+\s*[smhdw]\s*)+)\s*$"


@overload
def parse_duration(value: str | int | timedelta, *, allow_never: Literal[False] = False) -> timedelta: ...


@overload
def parse_duration(value: str | int | timedelta, *, allow_never: bool) -> timedelta | None: ...


def parse_duration(value: str | int | timedelta, *, allow_never: bool = False) -> timedelta | None:
    """The `timedelta` that `value` means, or None for `never` when `allow_never` is set.

    Raises `ValueError` whose message says what a duration looks like; callers put the key in
    front of it.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(_expected(allow_never))
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{_expected(allow_never)}, not a negative number")
        return timedelta(seconds=value)
    text = value.strip().lower()
    if text == NEVER:
        if allow_never:
            return None
        raise ValueError(f"{EXPECTED}; 'never' is not allowed here")
    if text.isdigit():
        return timedelta(seconds=int(text))
    if not _WHOLE.match(text):
        raise ValueError(f"{_expected(allow_never)}, not {value!r}")
    seconds = sum(int(amount) * _UNITS[unit] for amount, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest spelling that `parse_duration` reads back, for messages (`1h30m`, `0s`)."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _expected(allow_never: bool) -> str:
    return f"{EXPECTED} or 'never'" if allow_never else EXPECTED
