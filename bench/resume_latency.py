"""From an approval decision to the next step starting: p50/p95/max.

Why: a person who clicks Approve expects the workflow to move on at once, yet a suspended run
holds no worker. The decision is a guarded UPDATE plus an `advance` job; that advance walks the
run and queues the next step, and the step job claims it. This measures that whole path with
the product's own code: `--runs` runs of "approval (timeout 1h), then the builtin
`current_time` tool" are started and left waiting on their approvals, then decided one by one
with `decide` in-process (a Runtime built like tests/test_workflows.py `runtime()`),
each after the previous run has completed, so no decision waits behind another's jobs.

latency = the next step's `started_at` (written by the worker when it claims the step) minus
the moment just before `decide` was called; the table also splits off the `decide` call
itself (its transaction and the enqueue), the part a Slack button handler would wait on.
Workers: `teammates worker --concurrency 2 --queues workflows` (SimpleWorkers).

Everything runs on 127.0.0.1: redis-server, SQLite in a temp dir (or `--database postgres`).

    .venv/bin/python bench/resume_latency.py [--runs 200] [--workers 2]
                                             [--database sqlite|postgres] [--json]

Exit status 1 when a decision was refused or a run did not complete; the target is reported,
not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis
from _engine_stack import EngineStack, add_workflows, as_utc, poll, stats
from _util import log, run_bench
from sqlalchemy import func, select

from jobs import queues
from jobs.runs.approvals import Decision, decide
from jobs.runs.start import start_run
from jobs.runtime import Runtime
from storage.db import Database
from storage.models import Approval, StepRun, WorkflowRun

TARGET_P95_MS = 100.0
PERCENTILES = (50, 95)
STEP_WAIT_S = 10.0  # a resumed run that has not completed by then counts as stuck
WORKFLOW = """\
name: approve-then-time
member: nova
trigger: {manual: {}}
steps:
  - id: ask
    approval: {message: "Go ahead?", timeout: 1h}
  - id: now
    tool: current_time
"""


async def waiting_counts(db: Database) -> tuple[int, int]:
    """(pending approvals, runs shown as waiting)."""
    async with db.session() as session:
        pending = (await session.execute(select(func.count()).where(Approval.status == "pending"))).scalar_one()
        waiting = (await session.execute(select(func.count()).where(WorkflowRun.status == "waiting"))).scalar_one()
    return int(pending), int(waiting)


async def pending_approvals(db: Database) -> list[tuple[str, str]]:
    async with db.session() as session:
        rows = await session.execute(select(Approval.id, Approval.run_id).where(Approval.status == "pending").order_by(Approval.created_at))
        return [(a, str(r)) for a, r in rows]


async def resumed(db: Database, run_id: str) -> tuple[datetime | None, str]:
    """The next step's start, and the run's status, read in one statement: SQLite reads
    outside a write run in autocommit, so two SELECTs could see two different moments."""
    query = (select(StepRun.started_at, WorkflowRun.status)
             .select_from(WorkflowRun)
             .outerjoin(StepRun, (StepRun.run_id == WorkflowRun.id) & (StepRun.step_path == "now"))
             .where(WorkflowRun.id == run_id))
    async with db.session() as session:
        started, status = (await session.execute(query)).one()
    return (as_utc(started) if started else None), status


async def decide_one(rt: Runtime, approval_id: str, run_id: str) -> dict[str, Any]:
    """Decide, then wait (polling every 10 ms) for the run to complete; the timings."""
    before = datetime.now(UTC)
    accepted = await decide(rt, approval_id, Decision("approved", by="bench"))
    after = datetime.now(UTC)
    deadline = time.monotonic() + STEP_WAIT_S
    started, status = None, "waiting"
    while status != "completed" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        started, status = await resumed(rt.db, run_id)
    return {"accepted": accepted, "completed": status == "completed", "decide_s": (after - before).total_seconds(),
            "latency_s": (started - before).total_seconds() if started else None}


async def decide_all(rt: Runtime) -> list[dict[str, Any]]:
    return [await decide_one(rt, approval_id, run_id) for approval_id, run_id in await pending_approvals(rt.db)]


async def start_runs(db: Database, conn: redis.Redis, count: int) -> None:
    for _ in range(count):
        await start_run(db, conn, "approve-then-time", "manual", {})


def measure(args: argparse.Namespace) -> dict[str, Any]:
    stack = EngineStack("resume", args.database)
    try:
        stack.setup()
        stack.engine_workers(args.workers)
        conn = redis.Redis.from_url(stack.redis_url)
        with asyncio.Runner() as runner:
            db = runner.run(stack.open_db())
            try:
                runner.run(add_workflows(db, [WORKFLOW]))
                runner.run(start_runs(db, conn, args.runs))
                log(f"started {args.runs} runs; waiting until every one waits on its approval")
                poll(lambda: runner.run(waiting_counts(db)) == (args.runs, args.runs), "runs waiting on approvals", 120)
                poll(lambda: queues.queue(conn, queues.WORKFLOWS).count == 0, "an empty queue", 60)
                log("deciding one by one")
                outcomes = runner.run(decide_all(stack.runtime(db)))
            finally:
                runner.run(db.close())
    finally:
        stack.close()
    latencies = [o["latency_s"] for o in outcomes if o["latency_s"] is not None]
    return {"database": args.database, "workers": args.workers, "runs": args.runs,
            "decided": sum(o["accepted"] for o in outcomes), "completed": sum(o["completed"] for o in outcomes),
            "latency": stats(latencies, PERCENTILES), "decide_call": stats([o["decide_s"] for o in outcomes], PERCENTILES),
            "target_p95_ms": TARGET_P95_MS}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['runs']} runs (approval, then current_time), decided one by one; {result['workers']} SimpleWorkers, "
          f"{result['database']}")
    print(f"{'(ms)':<36} {'n':>5} {'min':>7} {'p50':>7} {'p95':>7} {'max':>7}")
    for label, s in (("decision -> next step started", result["latency"]), ("the decide call itself", result["decide_call"])):
        print(f"{label:<36} {s['n']:>5} {s['min_ms']:>7.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} {s['max_ms']:>7.1f}")
    p95 = result["latency"]["p95_ms"]
    print(f"p95 {p95:.1f} ms (target <= {TARGET_P95_MS:g} ms: {'met' if p95 <= TARGET_P95_MS else 'NOT met'}); "
          f"decided {result['decided']}, completed {result['completed']} of {result['runs']}")


def sound(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Every decision was accepted and every resumed run completed."""
    return bool(result["decided"] == result["completed"] == result["latency"]["n"] == args.runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs, each decided once (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    return run_bench(parser, measure, report, sound)


if __name__ == "__main__":
    sys.exit(main())
