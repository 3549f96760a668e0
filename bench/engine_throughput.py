"""1-step no-op workflow runs per second with 2 workers, beside plain RQ no-op jobs per second.

Why: the engine keeps the database as truth, so every step costs RQ jobs *and* transactions.
This puts a number on that overhead against the floor RQ itself sets on this machine, in the
same run: `--jobs` jobs of `os.getpid` drained by a plain `rq worker-pool` of 2 SimpleWorkers
(the worker class `teammates worker` uses), then `--runs` runs of a workflow whose one step is
the builtin `current_time` tool, drained by `teammates worker --concurrency 2 --queues workflows`.

Both sides are measured the same way: everything is queued first (jobs enqueued; runs created
in-process with `start_run`, which queues each run's first advance), then the workers
start, and the clock runs from the first job a worker took (RQ's `started_at`) to the last
completion (RQ's `ended_at` / the run's `finished_at`). Worker start-up and the producer are
outside both windows; how fast `start_run` went is printed beside them. Plain RQ is measured
before and after the engine and the ratio uses their mean: other load on the machine then shows
as a gap between the two instead of silently skewing the ratio.

A run's advances happen inline (the first inside `start_run`, the next inside the step's own
transaction), so a 1-step run is one RQ job; the table also shows the engine's RQ jobs/s,
counted by the workers themselves, to make that visible.

Everything runs on 127.0.0.1: redis-server, SQLite in a temp dir (or `--database postgres`: a
fresh database on the local cluster of scripts/postgres.sh, dropped afterwards).

    .venv/bin/python bench/engine_throughput.py [--runs 1000] [--jobs 2000] [--workers 2]
                                                [--database sqlite|postgres] [--json]

Exit status 1 when a run did not complete or a job failed (the figures are then suspect); the
target ratio is reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any

import redis
from _engine_stack import EngineStack, add_workflows, as_utc, job_times
from _util import log, run_bench
from rq import Queue, Worker
from rq.job import Job
from sqlalchemy import func, select

from jobs import queues
from jobs.runs.start import start_run
from storage.db import Database
from storage.models import WorkflowRun

TARGET_RATIO = 0.5
JOBS_PER_RUN_MIN = 1  # the step; advances run inline
RAW_QUEUE = "raw"
NOOP = """\
name: noop-1
member: nova
trigger: {manual: {}}
steps:
  - id: now
    tool: current_time
"""


def measure_raw(stack: EngineStack, jobs: int, workers: int, timeout: float) -> dict[str, Any]:
    """Drain `jobs` queued `os.getpid` jobs with a burst pool of SimpleWorkers."""
    conn = redis.Redis.from_url(stack.raw_redis_url)
    queue = Queue(RAW_QUEUE, connection=conn)
    queued = queue.enqueue_many([Queue.prepare_data("os.getpid", result_ttl=3600) for _ in range(jobs)])
    ids = [job.id for job in queued]
    pool = stack.raw_workers(workers, RAW_QUEUE, burst=True)
    pool.wait(timeout)
    times = job_times(conn, ids)
    started = [t["started_at"] for t in times if t["started_at"]]
    ended = [t["ended_at"] for t in times if t["ended_at"]]
    seconds = (max(ended) - min(started)).total_seconds() if ended else float("nan")
    return {"jobs": jobs, "completed": len(ended), "seconds": seconds, "jobs_per_s": len(ended) / seconds}


async def start_runs(db: Database, conn: redis.Redis, count: int) -> float:
    """Start `count` runs one after the other, as the web process or a trigger would; seconds taken."""
    began = time.perf_counter()
    for _ in range(count):
        await start_run(db, conn, "noop-1", "manual", {})
    return time.perf_counter() - began


async def run_counts(db: Database) -> dict[str, int]:
    async with db.session() as session:
        rows = await session.execute(select(WorkflowRun.status, func.count()).group_by(WorkflowRun.status))
        return {status: int(n) for status, n in rows}


async def last_finish(db: Database) -> datetime | None:
    async with db.session() as session:
        last = (await session.execute(select(func.max(WorkflowRun.finished_at)))).scalar_one()
    return as_utc(last) if last else None


def measure_engine(stack: EngineStack, runs: int, workers: int, timeout: float) -> dict[str, Any]:
    """Create `runs` runs, then drain them with `teammates worker` and poll the database."""
    conn = redis.Redis.from_url(stack.redis_url)
    with asyncio.Runner() as runner:
        db = runner.run(stack.open_db())
        try:
            runner.run(add_workflows(db, [NOOP]))
            start_seconds = runner.run(start_runs(db, conn, runs))
            log(f"started {runs} runs in-process in {start_seconds:.1f} s ({runs / start_seconds:.0f}/s); starting workers")
            # The first advances in the queue: RQ keeps their started_at for result_ttl (60 s).
            first_ids = queues.queue(conn, queues.WORKFLOWS).get_job_ids(0, workers)
            stack.engine_workers(workers)
            first: datetime | None = None
            deadline = time.monotonic() + timeout
            while True:
                if first is None:
                    begun = [j.started_at for j in Job.fetch_many(first_ids, connection=conn) if j and j.started_at]
                    first = min(begun) if begun else None
                counts = runner.run(run_counts(db))
                if counts.get("completed", 0) + counts.get("failed", 0) >= runs or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            end = runner.run(last_finish(db))
        finally:
            runner.run(db.close())
    executed = [(w.successful_job_count, w.failed_job_count) for w in Worker.all(connection=conn)]
    jobs_done = sum(ok for ok, _ in executed)
    seconds = (end - first).total_seconds() if first and end else float("nan")
    completed = counts.get("completed", 0)
    return {"runs": runs, "completed": completed, "other_status": {k: v for k, v in counts.items() if k != "completed"},
            "seconds": seconds, "runs_per_s": completed / seconds, "rq_jobs": jobs_done,
            "rq_jobs_failed": sum(bad for _, bad in executed), "rq_jobs_per_run": jobs_done / max(1, completed),
            "rq_jobs_per_s": jobs_done / seconds, "start_run_per_s": runs / start_seconds}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    stack = EngineStack("throughput", args.database)
    try:
        stack.setup()
        log(f"plain RQ: {args.jobs} os.getpid jobs, {args.workers} SimpleWorkers")
        before = measure_raw(stack, args.jobs, args.workers, args.timeout)
        log(f"engine: {args.runs} runs of a 1-step workflow, teammates worker --concurrency {args.workers}")
        eng = measure_engine(stack, args.runs, args.workers, args.timeout)
        stack.stop("engine-workers")
        log("plain RQ again (machine drift shows as a difference between the two)")
        after = measure_raw(stack, args.jobs, args.workers, args.timeout)
    finally:
        stack.close()
    raw_rate = (before["jobs_per_s"] + after["jobs_per_s"]) / 2
    return {"database": args.database, "workers": args.workers, "raw_before": before, "engine": eng, "raw_after": after,
            "raw_jobs_per_s": raw_rate, "ratio": eng["runs_per_s"] / raw_rate, "jobs_ratio": eng["rq_jobs_per_s"] / raw_rate,
            "target_ratio": TARGET_RATIO}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    eng = result["engine"]
    print(f"{result['workers']} SimpleWorkers, {result['database']}; window = first job taken -> last completion")
    print(f"{'':<28} {'count':>6} {'done':>6} {'seconds':>8} {'per s':>8}")
    for label, raw in (("plain RQ no-op jobs, before", result["raw_before"]), ("plain RQ no-op jobs, after", result["raw_after"])):
        print(f"{label:<28} {raw['jobs']:>6} {raw['completed']:>6} {raw['seconds']:>8.2f} {raw['jobs_per_s']:>8.1f}")
    print(f"{'engine 1-step runs':<28} {eng['runs']:>6} {eng['completed']:>6} {eng['seconds']:>8.2f} {eng['runs_per_s']:>8.1f}")
    print(f"{'engine RQ jobs (of runs)':<28} {eng['rq_jobs']:>6} {eng['rq_jobs'] - eng['rq_jobs_failed']:>6} "
          f"{eng['seconds']:>8.2f} {eng['rq_jobs_per_s']:>8.1f}")
    verdict = "met" if result["ratio"] >= TARGET_RATIO else "NOT met"
    print(f"ratio runs/s : plain RQ jobs/s (mean of both, {result['raw_jobs_per_s']:.1f}) = {result['ratio']:.3f} "
          f"(target >= {TARGET_RATIO}: {verdict})")
    print(f"note: RQ jobs per run measured {eng['rq_jobs_per_run']:.2f} (a 1-step run needs {JOBS_PER_RUN_MIN}: "
          f"advances run inline). Per RQ job the engine runs at {result['jobs_ratio']:.2f}x plain RQ.")
    print(f"start_run in-process (before the workers, not in the window): {eng['start_run_per_s']:.0f} runs/s")
    if eng["other_status"]:
        print(f"runs not completed: {eng['other_status']}")


def sound(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Every run completed, no engine job failed, every plain RQ job ran on both sides."""
    eng = result["engine"]
    raw_done = result["raw_before"]["completed"] == result["raw_after"]["completed"] == args.jobs
    return bool(eng["completed"] == args.runs and not eng["rq_jobs_failed"] and raw_done)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="workflow runs (default 1000)")
    parser.add_argument("--jobs", type=int, default=2000, help="plain RQ no-op jobs (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on each side (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up on a side after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    return run_bench(parser, measure, report, sound)


if __name__ == "__main__":
    sys.exit(main())
