"""Workflows run from their YAML through real RQ workers: outputs flow from step to step,
approvals suspend without holding a worker, failures retry and then follow `on_error`."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import redis as redis_lib

from jobs.runs import approvals
from jobs.runtime import Runtime
from storage.db import Database
from teammates.config import load
from tests.conftest import ANA, GENERAL, NOVA, ROOT, Stack, wait_until
from tests.fakes.anthropic_api import Reply


def apply(stack: Stack, text: str, name: str = "wf.yml") -> None:
    (stack.workdir / name).write_text(text)
    result = stack.cli("workflow", "apply", name)
    assert result.returncode == 0, result.stderr


def start(stack: Stack, name: str, *inputs: str) -> str:
    result = stack.cli("workflow", "run", name, *[arg for i in inputs for arg in ("--input", i)])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_json(stack: Stack, run_id: str) -> dict[str, Any]:
    result = stack.cli("runs", "--json")
    assert result.returncode == 0, result.stderr
    return next(r for r in json.loads(result.stdout) if r["id"] == run_id)


def wait_status(stack: Stack, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the run's row (cheap), then read the run as an operator sees it (`runs --json`)."""

    async def status() -> str | None:
        from storage import workflows as store

        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                run = await store.run(session, run_id)
                return run.status if run else None
        finally:
            await db.close()

    wait_until(lambda: asyncio.run(status()) in statuses, timeout=timeout, interval=0.2, what=f"run {run_id} to be {statuses}")
    return run_json(stack, run_id)


def in_general(stack: Stack) -> list[dict[str, Any]]:
    """Nova's posts in #general (approval requests go to the approvers' DMs)."""
    return [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL]


def runtime(stack: Stack) -> Runtime:
    loaded = load(str(stack.workdir / "teammates.yml"), env=stack.env)
    return Runtime(loaded=loaded, db=Database(loaded.config.database_url), channels=lambda *_: None,  # type: ignore[arg-type,return-value]
                   redis=redis_lib.Redis.from_url(stack.env["REDIS_URL"]))


def decide(stack: Stack, approval_id: str, decision: str, content: str | None = None) -> bool:
    async def go() -> bool:
        rt = runtime(stack)
        try:
            return await approvals.decide(rt, approval_id, approvals.Decision(decision, by=ANA, content=content))
        finally:
            await rt.db.close()

    return asyncio.run(go())


def pending_approval(stack: Stack, run_id: str) -> str:
    async def go() -> str | None:
        from sqlalchemy import select

        from storage.models import Approval

        rt = runtime(stack)
        try:
            async with rt.db.session() as session:
                return (await session.execute(select(Approval.id).where(Approval.run_id == run_id, Approval.status == "pending"))).scalar()
        finally:
            await rt.db.close()

    return wait_until(lambda: asyncio.run(go()), what="a pending approval")


def test_research_pipeline_passes_outputs_along_and_posts_after_approval(stack: Stack) -> None:
    stack.up()
    (stack.workdir / "pipeline.yml").write_text((ROOT / "examples/workflows/research-pipeline.yml").read_text())
    assert stack.cli("workflow", "apply", "pipeline.yml").returncode == 0
    stack.llm.script(Reply(text="FACTS: A, B, C"), Reply(text="SUMMARY: A matters"), Reply(text="REPORT: A wins"))
    run_id = start(stack, "research-pipeline", "topic=CRM tools", f"channel={GENERAL}")

    approval = pending_approval(stack, run_id)
    run = wait_status(stack, run_id, "waiting")
    assert [s["id"] for s in run["steps"]] == ["research", "summarize", "draft", "review"]
    assert run["steps"][3]["status"] == "waiting"
    prompts = [json.dumps(r["body"]["messages"]) for r in stack.llm.requests]
    assert "Research CRM tools" in prompts[0]
    assert "FACTS: A, B, C" in prompts[1] and "SUMMARY: A matters" in prompts[2]
    # Suspended on the approval, the run holds no worker.
    workers = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    from rq import Worker

    assert [w.get_state() for w in Worker.all(connection=workers)] == ["idle"]

    assert decide(stack, approval, "approved", content="REPORT: A wins (edited)")
    assert not decide(stack, approval, "rejected")  # the first decision wins
    run = wait_status(stack, run_id, "completed")
    [post] = in_general(stack)
    assert post["text"] == "REPORT: A wins (edited)"
    review = run["steps"][3]["output"]
    assert review["decision"] == "approved" and review["by"] == ANA


def test_unknown_template_variable_fails_the_run_naming_step_and_variable(stack: Stack) -> None:
    stack.up()
    apply(stack, """
name: typo
member: nova
trigger: {manual: {}}
steps:
  - id: first
    tool: lookup_user
    args: {user_id: U0ANA00001}
  - id: second
    post: {channel: C0GENERAL1, text: "{{ steps.first.output.nmae }}"}
""")  # what a step's output holds is known only when it runs (`steps.first.outptu` is refused by apply)
    run = wait_status(stack, start(stack, "typo"), "failed")
    assert "second" in run["error"] and "steps.first.output.nmae" in run["error"]
    assert stack.slack.posts_by(NOVA["token"]) == []


def test_a_failing_step_retries_with_backoff_then_follows_on_error(stack: Stack) -> None:
    stack.up()
    apply(stack, """
name: flaky
member: nova
trigger: {manual: {}}
steps:
  - id: look
    tool: lookup_user
    args: {user_id: U0NOBODY01}
    retry: {max: 2, backoff: 1s}
    on_error: continue
  - id: report
    post: {channel: C0GENERAL1, text: "lookup said: {{ steps.look.error }}"}
""")
    began = time.monotonic()
    run = wait_status(stack, start(stack, "flaky"), "completed", "failed")
    assert run["status"] == "completed", run
    look = run["steps"][0]
    assert look["status"] == "failed" and look["attempts"] == 3
    assert time.monotonic() - began >= 3  # waited 1 s, then 2 s, between attempts
    [post] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert "no user U0NOBODY01" in post["text"]


def test_an_approval_that_times_out_takes_the_on_timeout_path(stack: Stack) -> None:
    stack.up()
    apply(stack, """
name: reminder
member: nova
trigger: {manual: {}}
steps:
  - id: ask
    approval: {message: "Send it?", show: "Dear client", timeout: 2s, remind_at: 1s, on_timeout: skip, on_reject: continue}
  - id: send
    when: "{{ steps.ask.approved }}"
    post: {channel: C0GENERAL1, text: "{{ steps.ask.content }}"}
  - id: note
    post: {channel: C0GENERAL1, text: "decision: {{ steps.ask.decision }}"}
""")
    apply(stack, """
name: audit
member: nova
trigger: {event: {name: approval.decided, member: nova}}
inputs: [{name: decision, type: string}]
steps:
  - id: log
    post: {channel: C0GENERAL1, text: "audit: {{ inputs.decision }}"}
""", "audit.yml")
    run = wait_status(stack, start(stack, "reminder"), "completed", "failed", timeout=30)
    assert run["status"] == "completed"
    assert [s["status"] for s in run["steps"]] == ["done", "skipped", "done"]
    texts = sorted(p["text"] for p in wait_until(lambda: len(in_general(stack)) >= 2 and in_general(stack)))
    assert texts == ["audit: expired", "decision: expired"]  # the event started the audit workflow
    [reminder] = [p for p in stack.slack.posts_by(NOVA["token"]) if "a reminder" in p.get("text", "")]
    assert reminder.get("thread_ts") and f"<@{ANA}>" in reminder["text"]  # under the request, naming its approver


def test_foreach_over_200_items_never_runs_more_than_5_at_once(stack: Stack) -> None:
    stack.start_web()
    stack.start("pool", "worker", "--concurrency", "8")
    stack.slack.set_delay(0.05)
    items = json.dumps([f"item {i}" for i in range(200)])
    apply(stack, f"""
name: fanout
member: nova
trigger: {{manual: {{}}}}
inputs:
  - {{name: items, type: list, default: {items}}}
steps:
  - id: each
    foreach: "{{{{ inputs.items }}}}"
    concurrency: 5
    steps:
      - id: tell
        post: {{channel: C0GENERAL1, text: "{{{{ item }}}}"}}
""")
    run = wait_status(stack, start(stack, "fanout"), "completed", "failed", timeout=120)
    assert run["status"] == "completed"
    children = [s for s in run["steps"] if s["id"].startswith("each[")]
    assert len(children) == 200
    events = sorted([(s["started_at"], 1) for s in children] + [(s["finished_at"], -1) for s in children])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 5, peak
    texts = [p["text"] for p in stack.slack.posts_by(NOVA["token"])]
    assert sorted(texts) == sorted(f"item {i}" for i in range(200))


def test_workflow_list_and_webhook_trigger(stack: Stack) -> None:
    import hashlib
    import hmac
    import urllib.error
    import urllib.request

    stack.env["HOOK_SECRET"] = "s3cret"
    stack.up()
    apply(stack, """
name: intake
member: nova
trigger: {webhook: {secret: "${HOOK_SECRET}"}}
inputs: [{name: who, type: string}]
steps:
  - id: greet
    post: {channel: C0GENERAL1, text: "New lead: {{ inputs.who }}"}
""")
    body = json.dumps({"who": "Acme"}).encode()
    timestamp = str(int(time.time()))
    signature = "v1=" + hmac.new(b"s3cret", f"v1:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"X-Teammates-Timestamp": timestamp, "X-Teammates-Delivery": "d-1", "X-Teammates-Signature": signature}
    request = urllib.request.Request(f"{stack.url}/hooks/intake", data=body, headers=headers)
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
        run_id = json.loads(response.read())["run_id"]
    bad = urllib.request.Request(f"{stack.url}/hooks/intake", data=body, headers={**headers, "X-Teammates-Signature": "v1=00"})
    try:
        urllib.request.urlopen(bad)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    hooked = wait_status(stack, run_id, "completed")
    # applied without --as: the first admin created it, so the webhook's run comes from her
    assert hooked["origin"] == {"via": "webhook", "platform": None, "conversation": None, "thread": None, "person": "ana"}
    assert [p["text"] for p in stack.slack.wait_for_posts(1, token=NOVA["token"])] == ["New lead: Acme"]
    listing = json.loads(stack.cli("workflow", "list", "--json").stdout)
    assert listing == [{"name": "intake", "member": "nova", "status": "active", "version": 1, "trigger": "webhook",
                        "last_run": {"id": run_id, "status": "completed", "finished_at": listing[0]["last_run"]["finished_at"]},
                        "next_run": None}]


def test_a_bad_workflow_file_is_one_line_naming_the_step_and_key(stack: Stack) -> None:
    (stack.workdir / "bad.yml").write_text("""
name: bad
member: nova
trigger: {manual: {}}
steps:
  - id: each
    foreach: "{{ inputs.items }}"
    steps:
      - id: draft
        agent: nova
        promt: hello
""")
    result = stack.cli("workflow", "apply", "bad.yml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "bad.yml: steps[each].steps[draft].prompt: required but missing" in result.stderr




def test_killing_workers_mid_post_never_duplicates_or_loses_a_message(stack: Stack) -> None:
    import random
    import signal

    import psutil

    config = (stack.workdir / "teammates.yml").read_text()
    (stack.workdir / "teammates.yml").write_text(
        config.replace("workers: {step_lease: 3, reconcile_every: 1, channel_post_interval: 0}", "workers: {step_lease: 1, reconcile_every: 0.5, channel_post_interval: 0}")
    )
    stack.start_web()
    stack.slack.set_delay(0.15)  # a post takes long enough to be killed in the middle of it
    apply(stack, """
name: announce
member: nova
trigger: {manual: {}}
inputs:
  - {name: n, type: integer, default: 30}
steps:
  - id: each
    foreach: "{{ range(inputs.n) | list }}"
    concurrency: 2
    steps:
      - id: say
        post: {channel: C0GENERAL1, text: "announcement {{ item }}"}
""")
    run_id = start(stack, "announce")
    rng = random.Random(7)
    pool = stack.start("pool", "worker", "--concurrency", "2")
    for _ in range(20):
        # Wait for a worker to be inside a post (Slack has the message, the answer is still on
        # its way), then kill one at a random point: before, during or just after the answer.
        # RQ's worker pool forks a new worker in its place.
        seen = len(stack.slack.calls_to("chat.postMessage"))
        wait_until(lambda seen=seen: len(stack.slack.calls_to("chat.postMessage")) > seen, interval=0.01, what="a post in flight")
        time.sleep(rng.uniform(0.0, 0.3))
        workers = wait_until(lambda: psutil.Process(pool.pid).children(), what="pool workers")
        rng.choice(workers).send_signal(signal.SIGKILL)
    run = wait_status(stack, run_id, "completed", "failed", timeout=120)
    assert run["status"] == "completed", run
    texts = [p["text"] for p in stack.slack.posts_by(NOVA["token"])]
    assert sorted(texts) == sorted(f"announcement {i}" for i in range(30)), texts
    retried = [s for s in run["steps"] if s["id"].startswith("each[") and s["attempts"] > 1]
    assert retried, "no kill landed inside a step: the test proved nothing"


def test_versions_pin_runs_roll_back_and_stats_show_success_and_latency(stack: Stack) -> None:
    stack.up()
    v1 = """
name: greet
member: nova
trigger: {manual: {}}
steps:
  - id: wait_a_bit
    wait: 2s
  - id: say
    post: {channel: C0GENERAL1, text: "hello from v1"}
"""
    apply(stack, v1, "v1.yml")
    first = start(stack, "greet")
    apply(stack, v1.replace("hello from v1", "hello from v2"), "v2.yml")  # while the v1 run waits
    assert "active version 1" in stack.cli("workflow", "apply", "v1.yml").stdout  # rolled back, no new version
    assert "active version 2" in stack.cli("workflow", "apply", "v2.yml").stdout
    second = start(stack, "greet")
    assert wait_status(stack, first, "completed")["version"] == 1
    assert wait_status(stack, second, "completed")["version"] == 2
    texts = sorted(p["text"] for p in stack.slack.wait_for_posts(2, token=NOVA["token"]))
    assert texts == ["hello from v1", "hello from v2"]
    stats = json.loads(stack.cli("runs", "--stats", "--json").stdout)["greet"]
    assert stats["success_rate"] == 1.0 and stats["runs"] == {"completed": 2}
    assert stats["steps"]["wait_a_bit"]["p50"] >= 1.5 and stats["steps"]["say"]["count"] == 2
    paused = stack.cli("workflow", "pause", "greet")
    assert paused.returncode == 0 and json.loads(stack.cli("workflow", "list", "--json").stdout)[0]["status"] == "paused"


def test_parallel_branches_conditions_and_secrets_kept_out_of_outputs(stack: Stack) -> None:
    stack.env["TEAMMATES_SECRETS_KEY"] = "correct horse battery staple"
    config = (stack.workdir / "teammates.yml").read_text()
    (stack.workdir / "teammates.yml").write_text("secrets_key: ${TEAMMATES_SECRETS_KEY}\n" + config)
    stored = stack.cli("secret", "set", "ANA_ID", input="U0ANA00001\n")
    assert stored.returncode == 0, stored.stderr
    listed = stack.cli("secret", "list")
    assert listed.stdout.split() == ["ANA_ID"] and "U0ANA00001" not in listed.stdout
    stack.up(workers=2)
    apply(stack, """
name: fork
member: nova
trigger: {manual: {}}
inputs: [{name: big, type: boolean, default: false}]
steps:
  - id: both
    parallel:
      - - id: who
          tool: lookup_user
          args: {user_id: "{{ secrets.ANA_ID }}"}
      - - id: size
          condition:
            if: "{{ inputs.big }}"
            then: [{id: large, post: {channel: C0GENERAL1, text: "big"}}]
            else: [{id: small, post: {channel: C0GENERAL1, text: "small"}}]
  - id: done
    post: {channel: C0GENERAL1, text: "{{ steps.who.output.real_name }} / {{ steps.small.status }}"}
""")
    run = wait_status(stack, start(stack, "fork"), "completed", "failed")
    assert run["status"] == "completed", run
    texts = [p["text"] for p in stack.slack.wait_for_posts(2, token=NOVA["token"])]
    assert sorted(texts) == ["Ana de Vries / done", "small"]
    dumped = stack.cli("runs", "--json").stdout
    assert "U0ANA00001" not in dumped and "[secret]" in dumped  # the secret's value never reaches run output


def test_a_handoff_starts_the_other_members_run_and_its_listeners_once_even_when_retried(stack: Stack) -> None:
    stack.up()
    apply(stack, "name: chase\nmember: casey\ntrigger: {manual: {}}\ninputs: [{name: invoice, type: string, required: true}]\n"
                 "steps: [{id: now, tool: current_time}]\n", "chase.yml")
    apply(stack, "name: on-handoff\nmember: casey\ntrigger: {event: {name: member.handoff, member: casey}}\n"
                 "steps: [{id: now, tool: current_time}]\n", "listener.yml")
    apply(stack, "name: hand-over\nmember: nova\ntrigger: {manual: {}}\n"
                 "steps: [{id: pass, handoff: {member: casey, workflow: chase, input: {invoice: '2041'}, message: 'Please chase 2041'}}]\n",
          "parent.yml")
    parent = start(stack, "hand-over")
    done = wait_status(stack, parent, "completed")
    handed = done["steps"][0]["output"]
    assert handed["member"] == "casey" and handed["message"] == "Please chase 2041"

    def runs_of(name: str) -> list[dict[str, Any]]:
        result = stack.cli("runs", "--json")
        assert result.returncode == 0, result.stderr
        return [r for r in json.loads(result.stdout) if r["workflow"] == name]

    [child] = runs_of("chase")
    assert child["id"] == handed["run_id"] and child["input"] == {"invoice": "2041"}
    wait_status(stack, child["id"], "completed")
    [heard] = runs_of("on-handoff")
    assert heard["input"] == {"from": "nova", "from_run_id": parent, "member": "casey", "run_id": child["id"],
                              "message": "Please chase 2041"}

    # What a worker killed right after the hand-off committed leaves behind: the step still
    # `running` with its lease run out. The reconciler hands it to another worker.
    async def crash_state() -> None:
        from sqlalchemy import update

        from storage.models import StepRun, WorkflowRun, utcnow

        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                await session.execute(update(WorkflowRun).where(WorkflowRun.id == parent).values(status="running", finished_at=None))
                await session.execute(update(StepRun).where(StepRun.run_id == parent).values(
                    status="running", finished_at=None, lease_until=utcnow() - timedelta(seconds=1)))
        finally:
            await db.close()

    asyncio.run(crash_state())
    again = wait_status(stack, parent, "completed")
    assert again["steps"][0]["attempts"] == 2, "the step really ran again"
    assert again["steps"][0]["output"] == handed
    assert len(runs_of("chase")) == 1 and len(runs_of("on-handoff")) == 1


def test_apply_refuses_a_template_over_a_limit_within_a_second(stack: Stack) -> None:
    import resource

    def cpu_of_children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    document = ("name: boom\nmember: nova\ntrigger: {manual: {}}\n"
                "steps:\n  - id: shout\n    post: {channel: C0GENERAL1, text: \"{{ 'a' * 10**9 }}\"}\n")
    (stack.workdir / "fine.yml").write_text(document.replace("10**9", "10").replace("boom", "fine"))
    (stack.workdir / "boom.yml").write_text(document)
    before = cpu_of_children()
    assert stack.cli("workflow", "apply", "fine.yml").returncode == 0
    baseline, before = cpu_of_children() - before, cpu_of_children()
    result = stack.cli("workflow", "apply", "boom.yml")
    refused = cpu_of_children() - before
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("teammates: boom.yml: steps[shout].post.text: exceeds a template limit:"
                                     " a value larger than 1,000,000 characters or items")
    # What the CLI costs beyond starting up (CPU time: neighbours on a busy machine do not count).
    assert refused - baseline < 1, (refused, baseline)
    assert "boom" not in stack.cli("workflow", "list").stdout


def test_a_template_over_a_limit_fails_its_step_quickly_and_the_worker_carries_on(stack: Stack) -> None:
    stack.up()
    apply(stack, """
name: heavy
member: nova
trigger: {manual: {}}
inputs: [{name: n, type: integer, default: 9}, {name: big, type: integer, default: 10000}]
steps:
  - id: power
    post: {channel: C0GENERAL1, text: "{{ 9 ** 9 ** inputs.n }}"}
    on_error: continue
  - id: loops
    post: {channel: C0GENERAL1, text: "{% for i in range(inputs.big) %}{% for j in range(inputs.big) %}{% endfor %}{% endfor %}done"}
    on_error: continue
  - id: after
    post: {channel: C0GENERAL1, text: "still here"}
""")
    import psutil

    worker = psutil.Process(stack.procs["worker"].pid)

    def cpu_of_run(*inputs: str) -> tuple[dict[str, Any], float]:
        before = sum(worker.cpu_times()[:2])
        run = wait_status(stack, start(stack, "heavy", *inputs), "completed", "failed", timeout=30)
        return run, sum(worker.cpu_times()[:2]) - before

    light, _ = cpu_of_run("n=1", "big=2")  # the same run with harmless numbers; warms the worker up
    assert [s["status"] for s in light["steps"]] == ["done", "done", "done"], light
    run, cpu = cpu_of_run()
    assert run["status"] == "completed", run
    power, loops, after = run["steps"]
    assert power["status"] == "failed" and power["error"].startswith("step 'power': post.text: exceeds a template limit: a number larger than 2**256"), power
    assert loops["status"] == "failed" and loops["error"].startswith("step 'loops': post.text: exceeds a template limit: more than 100,000 loop iterations"), loops
    assert after["status"] == "done"
    # The warm worker spent under a second on the whole run (CPU time: on a busy machine the wall
    # clock measures the neighbours); before the limits the nested loop ran 10**8 iterations.
    assert cpu < 1, cpu
    posts = stack.slack.wait_for_posts(4, token=NOVA["token"])
    assert [p["text"] for p in posts] == ["387420489", "done", "still here", "still here"]
    assert stack.procs["worker"].poll() is None and stack.procs["web"].poll() is None
