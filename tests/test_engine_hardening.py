"""The engine under adversity: large outputs, lost Redis work, lost leases, retries and limits.

Each test drives a run through the public interfaces (the CLI, real workers, the engine's own
reconcile/fire functions with a controlled clock) and asserts what an operator would notice."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis as redis_lib
from rq import Queue
from rq.registry import ScheduledJobRegistry

from tests.conftest import GENERAL, NOVA, Stack
from tests.fakes.anthropic_api import Reply
from tests.test_workflows import apply, runtime, start, wait_status

DRAFT = 4000  # characters each agent step answers with


def test_a_foreach_of_20_long_agent_outputs_completes_and_the_last_step_sees_all_of_them(stack: Stack) -> None:
    """20 drafts of 4,000 characters are 80k characters of foreach output: stored whole, the run
    completes and the step after it reads every draft; `runs --json` shows it shortened."""

    def answer(body: dict[str, Any]) -> Reply:
        prompt = json.dumps(body["messages"])
        found = re.search(r"Draft number (\d+)", prompt)
        if found is None:
            return Reply(text="COMBINED")
        head = f"<draft {found.group(1)}>"
        return Reply(text=head + "x" * (DRAFT - len(head)))

    stack.llm.set_responder(answer)
    stack.up()
    apply(stack, """
name: drafts
member: nova
trigger: {manual: {}}
steps:
  - id: each
    foreach: "{{ range(20) | list }}"
    concurrency: 5
    steps:
      - id: draft
        agent: nova
        prompt: "Draft number {{ item }}"
  - id: combine
    agent: nova
    prompt: "Combine these: {{ steps.each.output | join(' | ') }}"
""")
    run = wait_status(stack, start(stack, "drafts"), "completed", "failed", timeout=90)
    assert run["status"] == "completed", run["error"]
    last = json.dumps(stack.llm.requests[-1]["body"]["messages"])
    for i in range(20):
        head = f"<draft {i}>"
        assert head + "x" * (DRAFT - len(head)) in last, f"the last step misses draft {i}"
    container = next(s for s in run["steps"] if s["id"] == "each")
    assert container.get("truncated") is True and isinstance(container["output"], str)
    assert len(container["output"]) < 20 * DRAFT  # shown shortened; the run read it whole
    assert all("truncated" not in s for s in run["steps"] if s["id"] != "each")


def test_a_foreach_over_more_items_than_the_limit_fails_naming_the_step_and_the_limit(stack: Stack) -> None:
    config = (stack.workdir / "teammates.yml").read_text()
    (stack.workdir / "teammates.yml").write_text(config + "workflows: {max_foreach_items: 5}\n")
    stack.up()
    apply(stack, """
name: many
member: nova
trigger: {manual: {}}
steps:
  - id: each
    foreach: "{{ range(6) | list }}"
    steps:
      - {id: now, tool: current_time}
""")
    run = wait_status(stack, start(stack, "many"), "completed", "failed")
    assert run["status"] == "failed"
    assert "'each'" in run["error"] and "workflows.max_foreach_items (5)" in run["error"], run["error"]
    assert run["steps"] == []  # nothing of it ran


def _burst(stack: Stack) -> None:
    """Run every queued job to the end with one worker, as a deployment's workers would."""
    done = stack.cli("worker", "--burst")
    assert done.returncode == 0, done.stderr


def test_after_a_flushall_every_one_minute_schedule_fires_every_slot(stack: Stack) -> None:
    """Redis loses everything just after a slot's runs were started: their queued first steps,
    a deferred first advance (a run with no step rows yet) and every next-slot timer. One
    reconcile pass later (the clock moved a few seconds) all of it is queued again, the runs
    finish, and the next slot starts a run for every schedule: none is skipped."""
    assert stack.cli("workflow", "list").returncode == 0  # seeds the members
    connection = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    count = 5

    async def main(phase: str, ids: list[int], slot: int) -> Any:
        from jobs import schedules
        from jobs.runs.reconcile import reconcile
        from jobs.runs.start import start_run
        from jobs.workflows.definition import as_document, load_definition
        from storage import workflows as store

        rt = runtime(stack)
        assert rt.redis is not None
        try:
            if phase == "apply":
                async with rt.db.session() as session:
                    for i in range(count):
                        row, _, _ = await store.apply(session, as_document(load_definition(
                            f'name: every-{i}\nmember: nova\ntrigger: {{schedule: "* * * * *"}}\n'
                            'steps: [{id: now, tool: current_time}]')))
                        ids.append(row.id)
                    await store.apply(session, as_document(load_definition(
                        "name: hook\nmember: nova\ntrigger: {manual: {}}\nsteps: [{id: now, tool: current_time}]")))
                return ids
            if phase == "fire":
                outcomes = [await schedules.fire(rt, wid, slot) for wid in ids]
                return outcomes
            if phase == "deferred":
                return await start_run(rt.db, rt.redis, "hook", "manual", {}, defer=True)  # as the web process does
            if phase == "repair":
                now = datetime.now(UTC) + timedelta(seconds=2)  # a reconcile period later
                fixed = await reconcile(rt, now=now)
                await schedules.reconcile(rt.db, rt.redis, now=datetime.fromtimestamp(slot, UTC) + timedelta(seconds=30))
                return fixed
            async with rt.db.session() as session:  # "runs"
                return {wid: sorted((r.slot, r.status) for r in await store.runs(session, wid)) for wid in ids}
        finally:
            await rt.db.close()

    ids: list[int] = asyncio.run(main("apply", [], 0))
    first = (int(datetime.now(UTC).timestamp()) // 60 + 1) * 60
    assert all(o.startswith("started") for o in asyncio.run(main("fire", ids, first)))
    deferred = asyncio.run(main("deferred", ids, first))
    connection.flushall()  # before any worker took a job
    assert asyncio.run(main("repair", ids, first)) == count + 1  # 5 first steps, 1 first advance
    queued = set(ScheduledJobRegistry(queue=Queue("workflows", connection=connection)).get_job_ids())
    assert {f"wf-{wid}-{first + 60}" for wid in ids} <= queued, "every next slot is queued again"
    _burst(stack)
    assert wait_status(stack, deferred, "completed", "failed")["status"] == "completed"
    outcomes = asyncio.run(main("fire", ids, first + 60))
    assert all(o.startswith("started") for o in outcomes), outcomes  # not "skipped: previous run still going"
    _burst(stack)
    runs = asyncio.run(main("runs", ids, first))
    assert all(found == [(first, "completed"), (first + 60, "completed")] for found in runs.values()), runs


def test_a_retried_or_requeued_step_keeps_its_own_job_timeout(stack: Stack) -> None:
    """A step with `timeout: 900s` runs under RQ's limit of 900 s plus room to record its outcome,
    on its first attempt, on a retry after backoff, and when the reconciler queues it again."""
    assert stack.cli("workflow", "list").returncode == 0
    apply(stack, """
name: slow
member: nova
trigger: {manual: {}}
steps:
  - id: look
    tool: lookup_user
    args: {user_id: U0NOBODY01}
    timeout: 900s
    retry: {max: 2, backoff: 1s}
""")
    run_id = start(stack, "slow")
    queue = Queue("workflows", connection=redis_lib.Redis.from_url(stack.env["REDIS_URL"]))

    def step_timeouts() -> list[Any]:
        return [queue.fetch_job(j).timeout for j in queue.get_job_ids() if j.startswith("step-")]  # type: ignore[union-attr]

    assert step_timeouts() == [930]
    queue.empty()

    async def go(what: str) -> str:
        from sqlalchemy import update

        from jobs.runs.reconcile import reconcile
        from jobs.runs.steps import run_step
        from jobs.runs.timers import wake
        from storage.models import StepRun, utcnow

        rt = runtime(stack)
        try:
            if what == "attempt":  # no Slack for this runtime: the lookup fails, a retry follows
                return await run_step(rt, run_id, "look")
            if what == "wake":
                return await wake(rt, run_id, "look")
            async with rt.db.session() as session:  # its worker died: the lease ran out
                await session.execute(update(StepRun).where(StepRun.run_id == run_id).values(
                    status="running", lease_until=utcnow() - timedelta(seconds=1)))
            return str(await reconcile(rt))
        finally:
            await rt.db.close()

    assert asyncio.run(go("attempt")).startswith("retrying")
    time.sleep(1.2)
    assert asyncio.run(go("wake")) == "retry queued"
    assert step_timeouts() == [930]
    queue.empty()
    assert asyncio.run(go("requeue")) == "1"
    assert step_timeouts() == [930]


def test_a_step_whose_lease_went_to_another_worker_stops_and_its_side_effect_happens_once(stack: Stack) -> None:
    """Worker A is inside a slow model call of an agent step when its lease runs out (a stall)
    and another worker claims the step. A's next heartbeat finds the row is that later
    attempt: A stops ("lost its lease") before its model answers and never posts; the post is
    made once, by the attempt that holds the lease."""

    def answer(body: dict[str, Any]) -> Reply:
        if "tool_result" in json.dumps(body["messages"]):
            return Reply(text="posted")
        return Reply(tool_uses=[{"name": "post_message", "input": {"channel": GENERAL, "text": "posted once"}}], delay=3)

    stack.llm.set_responder(answer)
    stack.up()
    apply(stack, """
name: announce
member: nova
trigger: {manual: {}}
steps:
  - id: tell
    agent: nova
    prompt: "Announce it"
""")
    run_id = start(stack, "announce")
    stack.llm.wait_for_requests(1)  # worker A waits for the model

    async def lease(claim: bool) -> int | None:
        from sqlalchemy import update

        from storage import workflows as store
        from storage.models import StepRun, utcnow

        rt = runtime(stack)
        try:
            async with rt.db.session() as session:  # one transaction: A's heartbeat cannot come between
                await session.execute(update(StepRun).where(StepRun.run_id == run_id, StepRun.status == "running")
                                      .values(lease_until=utcnow() - timedelta(seconds=1)))
                if claim:  # what another worker's job does with an expired lease
                    return await store.claim_step(session, run_id, "tell", utcnow() + timedelta(seconds=60))
            return None
        finally:
            await rt.db.close()

    assert asyncio.run(lease(claim=True)) == 2
    time.sleep(4.5)  # A's model has answered by now: A would have posted
    assert stack.slack.posts_by(NOVA["token"]) == [], "the worker that lost its lease went on"
    assert "lost its lease" in stack.logs("worker")
    asyncio.run(lease(claim=False))  # the other worker dies in turn: the reconciler hands the step on
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed" and run["steps"][0]["attempts"] == 3, run
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"])] == ["posted once"]


def test_a_run_the_web_process_starts_is_advanced_by_a_worker(stack: Stack) -> None:
    """The web process's reconciler catches up a missed slot: it records the run and queues its
    first advance as a job (templates never render on the web loop, nor while an ack may wait
    on the write lock); a worker then walks it to the end."""
    assert stack.cli("workflow", "list").returncode == 0
    connection = redis_lib.Redis.from_url(stack.env["REDIS_URL"])

    async def main(phase: str) -> Any:
        from jobs import schedules
        from jobs.workflows.definition import as_document, load_definition
        from storage import workflows as store

        rt = runtime(stack)
        assert rt.redis is not None
        try:
            async with rt.db.session() as session:
                if phase == "catch up":
                    row, _, _ = await store.apply(session, as_document(load_definition(
                        'name: hourly\nmember: nova\ntrigger: {schedule: "0 * * * *"}\n'
                        'steps: [{id: now, tool: current_time}]')))
                    row.created_at = datetime.now(UTC) - timedelta(hours=2)
            if phase == "catch up":
                now = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
                await schedules.reconcile(rt.db, rt.redis, now=now)
            async with rt.db.session() as session:
                [run] = await store.runs(session)
                return run.id, run.status, list(await store.steps(session, run.id))
        finally:
            await rt.db.close()

    run_id, status, steps = asyncio.run(main("catch up"))
    assert (status, steps) == ("running", [])  # recorded; nothing rendered or walked yet
    jobs = Queue("workflows", connection=connection).get_job_ids()
    assert [j.split("-")[0] for j in jobs] == ["adv"], jobs
    _burst(stack)
    assert asyncio.run(main("after"))[1:] == ("completed", ["now"])
