"""RQ entry points of the engine (sync functions RQ imports by name; each runs its coroutine
on the worker's persistent event loop)."""

from __future__ import annotations

from jobs import loop
from jobs.runs.advance import advance
from jobs.runs.progress import refresh
from jobs.runs.settings import settings
from jobs.runs.steps import run_step
from jobs.runs.timers import wake
from jobs.runtime import current


def advance_job(run_id: str) -> str:
    rt = current()
    assert rt.redis is not None
    return loop.run(advance(rt.db, rt.redis, run_id, settings(rt)))


def step_job(run_id: str, path: str) -> str:
    return loop.run(run_step(current(), run_id, path))


def wake_job(run_id: str, path: str) -> str:
    return loop.run(wake(current(), run_id, path))


def progress_job(run_id: str) -> str:
    return loop.run(refresh(current(), run_id))
