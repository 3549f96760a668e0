"""Putting a run's work on RQ: advance, step and wake jobs, with ids RQ accepts.

Enqueueing always happens after the transaction that recorded the work has committed: a job
that finds nothing to do is harmless, a recorded step without a job is repaired by `reconcile`.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime

from redis import Redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.queue import EnqueueData
from rq.registry import StartedJobRegistry

from jobs import queues
from jobs.workflows.definition import Step

ADVANCE_JOB = "jobs.runs.jobs.advance_job"
STEP_JOB = "jobs.runs.jobs.step_job"
WAKE_JOB = "jobs.runs.jobs.wake_job"
DEFAULT_STEP_TIMEOUT = 600  # seconds, for a step without `timeout`


def enqueue_advance(redis: Redis, run_id: str, job_id: str | None = None) -> None:
    _enqueue(redis, [_advance_data(run_id, job_id)])


def enqueue_step(redis: Redis, run_id: str, path: str, job_timeout: int) -> None:
    _enqueue(redis, [_step_data(run_id, path, job_timeout)])


def enqueue_steps(redis: Redis, run_id: str | None, steps: list[tuple[str, Step]]) -> None:
    """Queue the steps an advance decided on; an empty path asks for a full advance instead."""
    enqueue_runs_steps(redis, [(run_id, steps)])


def enqueue_runs_steps(redis: Redis, runs: list[tuple[str | None, list[tuple[str, Step]]]], *, at_front: bool = False) -> None:
    """`enqueue_steps` for several runs in one Redis round trip (a foreach fan-out, a batch of
    schedules started together). `at_front` puts them ahead of what waits in the queue."""
    jobs = []
    for run_id, steps in runs:
        for path, step in steps:
            assert run_id is not None
            job = _step_data(run_id, path, job_timeout(step)) if path else _advance_data(run_id)
            jobs.append(job._replace(at_front=at_front))
    _enqueue(redis, jobs)


def schedule_wake(redis: Redis, run_id: str, path: str, at: datetime) -> None:
    """A timer on RQ's scheduler, rounded up to its whole seconds so it never fires early;
    the reconciler wakes the step too if Redis loses it."""
    due = math.ceil(at.timestamp())
    queues.queue(redis, queues.WORKFLOWS).enqueue_at(
        datetime.fromtimestamp(due, UTC), WAKE_JOB, run_id, path,
        job_id=f"wake-{run_id}-{_job_safe(path)}-{due}-{uuid.uuid4().hex[:6]}", result_ttl=60,
    )


def job_timeout(step: Step) -> int:
    """RQ's limit for a step's job: the step's own timeout plus room to record its outcome."""
    limit = step.timeout_delta
    return int(limit.total_seconds()) + 30 if limit is not None else DEFAULT_STEP_TIMEOUT


def step_key(run_id: str, path: str) -> str:
    """How `pending_work` names a step's job."""
    return f"{run_id}/{_job_safe(path)}"


def pending_work(redis: Redis) -> set[str]:
    """The engine's work Redis holds now, queued, being taken or running: a run id for each
    advance, a `step_key` for each step job. Three reads, whatever the number of runs; job ids
    carry the run id (and a step's path hash), so no job is loaded. A job taken between two
    of the reads may be missed: the caller then queues it again, which is harmless (a step is
    claimed once, an advance is idempotent)."""
    queue = queues.queue(redis, queues.WORKFLOWS)
    ids = [*queue.get_job_ids(), *IntermediateQueue(queue.key, redis).get_job_ids(),
           *StartedJobRegistry(queue=queue).get_job_ids()]
    out: set[str] = set()
    for job_id in ids:
        kind, _, rest = job_id.partition("-")
        parts = rest.split("-")
        if kind == "step" and len(parts) >= 2:
            out.add(f"{parts[0]}/{parts[1]}")
        elif kind == "adv":
            out.add(parts[0])
        elif kind == "resume" and len(parts) >= 2:  # resume-ap-<run id>-<path hash>
            out.add(parts[1])
    return out


def _advance_data(run_id: str, job_id: str | None = None) -> EnqueueData:
    return Queue.prepare_data(ADVANCE_JOB, (run_id,), job_id=job_id or f"adv-{run_id}-{uuid.uuid4().hex[:8]}",
                              result_ttl=60, timeout=120)


def _step_data(run_id: str, path: str, timeout: int) -> EnqueueData:
    return Queue.prepare_data(STEP_JOB, (run_id, path), job_id=f"step-{run_id}-{_job_safe(path)}-{uuid.uuid4().hex[:6]}",
                              timeout=timeout, result_ttl=60, failure_ttl=7 * 24 * 3600)


def _enqueue(redis: Redis, jobs: list[EnqueueData]) -> None:
    if jobs:
        queues.queue(redis, queues.WORKFLOWS).enqueue_many(jobs)


def _job_safe(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:10]
