"""The per-process runtime a job uses: config, database, LLM client, channels, Redis.

RQ imports job functions by name, so the runtime cannot be passed in: the process that starts
the worker (`teammates worker`) installs a builder, and each process builds its runtime once,
lazily, in the event loop that runs its jobs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from redis import Redis

from agents.channels import ChannelProvider
from storage.db import Database
from teammates.config import LoadedConfig

if TYPE_CHECKING:  # the web process never imports anthropic (1.5 s, tens of MB)
    import anthropic


@dataclass
class Runtime:
    loaded: LoadedConfig
    db: Database
    channels: ChannelProvider
    redis: Redis | None  # None in `teammates chat`, which needs no queue
    llm_factory: Callable[[], anthropic.AsyncAnthropic] | None = None

    @cached_property
    def llm(self) -> anthropic.AsyncAnthropic:
        """Created on first use: a web process that only reconciles never imports anthropic."""
        return (self.llm_factory or (lambda: llm_client(self.loaded)))()


_builder: Callable[[], Runtime] | None = None
_current: Runtime | None = None
_pid: int | None = None


def install(builder: Callable[[], Runtime]) -> None:
    global _builder, _current
    _builder, _current = builder, None


def current() -> Runtime:
    """This process's runtime; rebuilt after a fork (connections do not survive one)."""
    global _current, _pid
    if _current is None or _pid != os.getpid():
        if _builder is None:
            raise RuntimeError("no runtime installed: start workers with `teammates worker`, not `rq worker`")
        _current, _pid = _builder(), os.getpid()
    return _current


def llm_client(loaded: LoadedConfig) -> anthropic.AsyncAnthropic:
    """The Anthropic client with its timeout set inside the job's own timeout on purpose:
    a slow model must end in an apology, not in a job killed by RQ."""
    import anthropic

    llm = loaded.config.llm
    return anthropic.AsyncAnthropic(
        api_key=os.environ.get("ANTHROPIC_API_KEY") or "missing-key",
        timeout=llm.timeout,
        max_retries=llm.max_retries,
    )
