"""What the engine needs from the config, in one value passed down (never read globally)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from jobs.runs.walk import DEFAULT_MAX_FOREACH_ITEMS
from jobs.runtime import Runtime
from teammates.config import Config

DEFAULT_MAX_HANDOFF_DEPTH = 5


@dataclass(frozen=True)
class RunSettings:
    """`grace`: how long a queued step may wait for its job before the reconciler queues it
    again (a step lease times ten: queues can be deep)."""

    secrets_key: str | None = None
    grace: timedelta = timedelta(minutes=5)
    max_foreach_items: int = DEFAULT_MAX_FOREACH_ITEMS
    max_handoff_depth: int = DEFAULT_MAX_HANDOFF_DEPTH


def settings(rt: Runtime) -> RunSettings:
    return from_config(rt.loaded.config)


def from_config(config: Config) -> RunSettings:
    """The engine's settings from the config (every process that starts or advances runs
    passes these down: the defaults would ignore the operator's limits)."""
    return RunSettings(
        secrets_key=config.secrets_key,
        grace=timedelta(seconds=config.workers.step_lease * 10),
        max_foreach_items=config.workflows.max_foreach_items,
        max_handoff_depth=config.workflows.max_handoff_depth,
    )


def lease(rt: Runtime) -> timedelta:
    """How long a worker holds a running step between heartbeats."""
    return timedelta(seconds=rt.loaded.config.workers.step_lease)
