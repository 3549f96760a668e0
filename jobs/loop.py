"""One event loop per worker process, kept across jobs.

RQ runs an `async def` job with `asyncio.run()`, a new loop per job, which would throw away
the database pool and HTTP connections each time. Job functions are sync and run their
coroutine here instead."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    global _loop, _pid
    if _loop is None or _pid != os.getpid() or _loop.is_closed():
        _loop, _pid = asyncio.new_event_loop(), os.getpid()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coro)
