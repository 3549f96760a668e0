"""From a click on Approve to the next step starting: p50/p95/p99/max, and where the time goes.

Why: a person who clicks Approve expects the workflow to move on at once, yet a suspended run
holds no worker. The click takes the whole product path: Slack's signed `block_actions` POST to
`teammates serve`, which records the click before the ack and then enqueues its job on the
`turns` queue; a worker runs that job (`jobs.actions.handle` -> `approvals.act` -> `decide`:
the guarded UPDATE in one transaction, then the run's next advance in the same job (its own
transaction: no job hop), the next step's job on `workflows`, then every copy of the request is
updated); a worker claims that step (its `step_runs.started_at`). Where the advance had to be
queued as a job (`resume-<approval id>`, after a failure), the split shows its hop and run too.

The workflow is "approval (approvers: [ana], the config's admin), then a `post` to #general".
`--runs` runs are started in-process (`start_run`) and left waiting until every request was
posted (the approval row lists the copy it posted: its DM to Ana); then they are approved one
at a time, each after the previous run completed and its click was handled, so no click waits
behind another's jobs.

latency = the next step's `step_runs.started_at` (UTC, written by the worker that claims it)
minus the wall clock (UTC) just before the signed click was sent; both clocks are this
machine's. Also reported: the click's HTTP ack time, the post landing in the Slack fake (its
`ts` is the fake's wall clock), and a split of the path from the timestamps the product and RQ
write (the action row, the RQ jobs' enqueued/started/ended times, the approval's decided_at).

Everything runs on 127.0.0.1: redis-server, FakeSlack, SQLite in a temp dir (or
`--database postgres`, a fresh database on scripts/postgres.sh's cluster), `teammates serve`
and one `teammates worker --concurrency N` pool on turns,workflows,bulk. Config: the tests'
(tests/conftest.py), with the product's default worker settings except
`channel_post_interval: 0` (the pacing between posts to one channel is not the subject here).

    .venv/bin/python bench/resume_latency.py [--runs 40] [--workers 2]
                                             [--database sqlite|postgres] [--json]

Exit status 1 when a click was not acked with 200 or a run did not complete; the target is
reported, not enforced.
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
from _engine_stack import EngineStack, as_utc, poll, stats
from _stack import MEMBERS, free_port
from _util import log, run_bench
from rq.job import Job
from sqlalchemy import select

from jobs.runs.start import start_run
from storage.db import Database
from storage.models import Approval, InboundAction, StepRun, WorkflowRun
from teammates.config import load
from tests.conftest import ANA, BOB, CONFIG, GENERAL, NOVA, NOVA_DM

TARGET_P95_MS = 100.0
PERCENTILES = (50, 95, 99)
STEP_WAIT_S = 15.0  # a click whose run has not completed by then counts as stuck
SETTLE_S = 0.1  # between a run's end and the next click: the workers are back waiting on Redis
WORKFLOW = """\
name: approve-then-post
member: nova
trigger: {manual: {}}
inputs:
  - {name: n, type: string, required: true}
steps:
  - id: ask
    approval: {message: "Go ahead with {{ inputs.n }}?", approvers: [ana], timeout: 1h}
  - id: post
    post: {channel: C0GENERAL1, text: "approved {{ inputs.n }}"}
"""
#: The tests' config with the product's default worker settings (no 1 s reconciler, 30 s
#: leases), except no pacing between posts to one channel.
BENCH_CONFIG = CONFIG.replace("workers: {step_lease: 3, reconcile_every: 1, channel_post_interval: 0}",
                              "workers: {channel_post_interval: 0}")
#: (label, from, to) over the timestamps `timeline` collects, in path order.
SEGMENTS = (
    ("click sent -> recorded (web, before the ack)", "sent", "recorded"),
    ("recorded -> action job enqueued (web, after ack)", "recorded", "action_enqueued"),
    ("action job: enqueued -> started (hop 1)", "action_enqueued", "action_started"),
    ("action job started -> decided_at (checks, decide)", "action_started", "decided"),
    ("decided_at -> advance job enqueued (commit)", "decided", "advance_enqueued"),
    ("advance job: enqueued -> started (hop 2)", "advance_enqueued", "advance_started"),
    ("advance job: started -> ended (walk, queue step)", "advance_started", "advance_ended"),
    ("advance ended -> step started_at (hop 3, claim)", "advance_ended", "step_started"),
    ("decided_at -> step started_at (all of the above)", "decided", "step_started"),
)
# RQ writes a job's ended_at after the function returned, i.e. after the step job was queued:
# the last segment can be below 0 when a free worker claimed the step first.


class Rig(EngineStack):
    """EngineStack's Redis, database (SQLite or PostgreSQL) and worker pool, plus the Slack
    fake with Ana and #general, the tests' config, and `teammates serve`."""

    def __init__(self, database: str) -> None:
        super().__init__("resume", database)
        self.url = ""

    def setup(self) -> None:
        self.start_redis()
        slack = self.start_slack(MEMBERS)
        slack.add_user(ANA, "ana", real_name="Ana de Vries", email="ana@acme.test")
        slack.add_user(BOB, "bob", real_name="Bob Jansen", email="bob@acme.test")
        slack.add_channel(GENERAL, "general", [ANA, BOB, NOVA["user"], MEMBERS["casey"]["user"]])
        slack.add_im(NOVA_DM, ANA, NOVA["user"])
        self.database_url = self._create_database()
        self.configure(BENCH_CONFIG, self.database_url)
        self.cli("migrate")
        self.loaded = load(str(self.config), env=self.env)
        (self.tmp / "workflow.yml").write_text(WORKFLOW)
        self.cli("workflow", "apply", "workflow.yml")

    def serve(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.teammates("web", "serve", "--host", "127.0.0.1", "--port", str(port))
        self.wait_healthy("web", self.url)


# ---------------------------------------------------------------- database reads


async def requests_posted(db: Database, run_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """run id -> (approval id, the copy posted) for the runs whose request is posted and whose
    run shows as waiting (the step's own switch to waiting is done: its worker is free)."""
    query = (select(Approval.run_id, Approval.id, Approval.messages)
             .join(WorkflowRun, WorkflowRun.id == Approval.run_id)
             .where(Approval.run_id.in_(run_ids), Approval.status == "pending", WorkflowRun.status == "waiting"))
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return {str(run): (approval, messages[0]) for run, approval, messages in rows if messages}


async def progress(db: Database, run_id: str, approval_id: str) -> dict[str, Any]:
    """The run's status, its `post` step's start, the approval's decision time and the click's
    row, in one statement (SQLite reads in autocommit: two SELECTs could see two moments)."""
    query = (select(WorkflowRun.status, StepRun.started_at, Approval.decided_at, InboundAction.id,
                    InboundAction.status, InboundAction.received_at)
             .select_from(WorkflowRun)
             .join(Approval, Approval.run_id == WorkflowRun.id)
             .outerjoin(StepRun, (StepRun.run_id == WorkflowRun.id) & (StepRun.step_path == "post"))
             .outerjoin(InboundAction, InboundAction.object_id == Approval.id)
             .where(WorkflowRun.id == run_id, Approval.id == approval_id))
    async with db.session() as session:
        status, started, decided, action_id, action_status, received = (await session.execute(query)).one()
    return {"run": status, "step_started": as_utc(started) if started else None, "decided": as_utc(decided) if decided else None,
            "action_id": action_id, "action": action_status, "recorded": as_utc(received) if received else None}


async def start_runs(db: Database, conn: redis.Redis, count: int) -> list[str]:
    run_ids = []
    for i in range(count):
        run_id = await start_run(db, conn, "approve-then-post", "manual", {"n": f"run{i:04d}"})
        assert run_id is not None
        run_ids.append(run_id)
    return run_ids


# ---------------------------------------------------------------- one click


def rq_times(conn: redis.Redis, job_id: str) -> dict[str, datetime | None]:
    job = Job.fetch_many([job_id], connection=conn)[0]
    if job is None:
        return {"enqueued": None, "started": None, "ended": None}
    return {key: as_utc(value) if value else None
            for key, value in (("enqueued", job.enqueued_at), ("started", job.started_at), ("ended", job.ended_at))}


def click_one(rig: Rig, runner: asyncio.Runner, db: Database, conn: redis.Redis, n: int, run_id: str,
              approval_id: str, copy: dict[str, Any]) -> dict[str, Any]:
    """Click Approve as Ana, wait until the run completed and the click's job is done; the timings."""
    driver = rig.driver(rig.url, "nova")
    sent = datetime.now(UTC)
    t0 = time.perf_counter()
    status, _ = driver.block_action("approval.approve", approval_id, user_id=ANA, channel_id=str(copy["conversation"]),
                                    message_ts=str(copy["message"]))
    ack_s = time.perf_counter() - t0
    deadline = time.monotonic() + STEP_WAIT_S
    state = runner.run(progress(db, run_id, approval_id))
    while (state["run"] != "completed" or state["action"] != "done") and time.monotonic() < deadline:
        time.sleep(0.02)  # the figures come from timestamps, not from this poll
        state = runner.run(progress(db, run_id, approval_id))
    action = rq_times(conn, f"action-{state['action_id']}") if state["action_id"] else {}
    advance = rq_times(conn, f"resume-{approval_id}")
    marks: dict[str, datetime | None] = {
        "sent": sent, "recorded": state["recorded"], "action_enqueued": action.get("enqueued"),
        "action_started": action.get("started"), "decided": state["decided"], "advance_enqueued": advance["enqueued"],
        "advance_started": advance["started"], "advance_ended": advance["ended"], "step_started": state["step_started"],
        "action_ended": action.get("ended"),
    }
    landed = [float(p["ts"]) for p in rig.slack.messages(GENERAL) if p.get("text") == f"approved run{n:04d}"] if rig.slack else []
    started = state["step_started"]
    return {"status": status, "completed": state["run"] == "completed", "ack_s": ack_s,
            "latency_s": (started - sent).total_seconds() if started else None,
            "posted_s": landed[0] - sent.timestamp() if landed else None,
            "marks": {k: v.isoformat() if v else None for k, v in marks.items()}}


def seconds_between(outcome: dict[str, Any], start: str, end: str) -> float | None:
    a, b = outcome["marks"].get(start), outcome["marks"].get(end)
    if a is None or b is None:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


# ---------------------------------------------------------------- the bench


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rig = Rig(args.database)
    outcomes: list[dict[str, Any]] = []
    try:
        rig.setup()
        rig.serve()
        rig.engine_workers(args.workers, queues="turns,workflows,bulk")
        conn = redis.Redis.from_url(rig.redis_url)
        with asyncio.Runner() as runner:
            db = runner.run(rig.open_db())
            try:
                run_ids = runner.run(start_runs(db, conn, args.runs))
                log(f"started {args.runs} runs; waiting until every request is posted")
                posted: dict[str, tuple[str, dict[str, Any]]] = {}

                def all_posted() -> bool:
                    posted.update(runner.run(requests_posted(db, run_ids)))
                    return len(posted) == len(run_ids)

                poll(all_posted, "every approval request posted", 180)
                log("clicking Approve one at a time")
                for n, run_id in enumerate(run_ids):
                    time.sleep(SETTLE_S)
                    approval_id, copy = posted[run_id]
                    outcomes.append(click_one(rig, runner, db, conn, n, run_id, approval_id, copy))
            finally:
                runner.run(db.close())
    finally:
        rig.close()
    latencies = [o["latency_s"] for o in outcomes if o["latency_s"] is not None]
    split = {label: stats([s for o in outcomes if (s := seconds_between(o, a, b)) is not None], (50, 95))
             for label, a, b in SEGMENTS}
    split["(action job: started -> ended, in parallel)"] = stats(
        [s for o in outcomes if (s := seconds_between(o, "action_started", "action_ended")) is not None], (50, 95))
    return {"database": args.database, "workers": args.workers, "runs": args.runs,
            "acked_200": sum(o["status"] == 200 for o in outcomes), "completed": sum(o["completed"] for o in outcomes),
            "latency": stats(latencies, PERCENTILES), "ack": stats([o["ack_s"] for o in outcomes], PERCENTILES),
            "posted": stats([o["posted_s"] for o in outcomes if o["posted_s"] is not None], PERCENTILES),
            "split": split, "target_p95_ms": TARGET_P95_MS, "clicks": outcomes if args.json else None}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['runs']} runs (approval by Ana, then a post), approved one click at a time; web + "
          f"{result['workers']} worker(s) on turns,workflows,bulk; {result['database']}")
    print(f"{'(ms)':<52} {'n':>4} {'min':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for label, s in (("click sent -> next step started (step_runs)", result["latency"]),
                     ("click sent -> post landed in Slack (fake's ts)", result["posted"]),
                     ("click HTTP ack (request -> response)", result["ack"])):
        print(f"{label:<52} {s['n']:>4} {s['min_ms']:>7.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} {s['p99_ms']:>7.1f} {s['max_ms']:>7.1f}")
    print("where the time goes (each segment's own p50/p95; they do not add up exactly):")
    print(f"{'(ms)':<52} {'n':>4} {'min':>7} {'p50':>7} {'p95':>7} {'max':>7}")
    for label, s in result["split"].items():
        if not s["n"]:
            continue  # no `resume-` advance job: the advance ran in the click's own job
        print(f"  {label:<50} {s['n']:>4} {s['min_ms']:>7.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} {s['max_ms']:>7.1f}")
    p95 = result["latency"]["p95_ms"]
    print(f"p95 <= {TARGET_P95_MS:g} ms: {'met' if p95 <= TARGET_P95_MS else 'not met'} (p95 {p95:.1f} ms); "
          f"acked 200: {result['acked_200']}, completed {result['completed']} of {result['runs']}")


def sound(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Every click was acked with 200 and every approved run completed with its step timed."""
    return bool(result["acked_200"] == result["completed"] == result["latency"]["n"] == args.runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="runs, each approved with one click (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="print the figures (and every click's timestamps) as JSON")
    return run_bench(parser, measure, report, sound)


if __name__ == "__main__":
    sys.exit(main())
