"""Many people at once, several processes, restarts: every message is answered exactly once."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import redis
from rq import Queue

from tests.conftest import ANA, NOVA, NOVA_DM, Stack, free_port, healthy, wait_until
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_driver import SlackDriver


def echo(delay: float = 0.0):  # type: ignore[no-untyped-def]
    def respond(body: dict) -> Reply:
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last if b.get("type") == "text")
        return Reply(text=f"re: {text.split(chr(10) * 2)[-1]}", delay=delay)  # the newest of merged lines

    return respond


def replies_to(stack: Stack) -> Counter[str]:
    return Counter(p["text"] for p in stack.slack.posts_by(NOVA["token"]))


def people_dming_nova(stack: Stack, count: int) -> list[tuple[str, str]]:
    """`count` people, each with their own DM to Nova: (user id, DM channel id). Turns of one
    conversation run one at a time and quick messages fold into one answer, so "one reply per
    message" under load is measured across many conversations, as many people would send."""
    people = []
    for i in range(count):
        user, dm = f"U0P{i:07d}", f"D0P{i:07d}"
        stack.slack.add_user(user, f"person{i}")
        stack.slack.add_im(dm, user, NOVA["user"])
        people.append((user, dm))
    return people


def test_teammates_run_answers_and_stops_cleanly(stack: Stack) -> None:
    stack.llm.set_responder(echo())
    proc = stack.start("run", "run", "--host", "127.0.0.1", "--port", str(stack.port), "--workers", "2")
    wait_until(stack._healthy, timeout=30, what="teammates run to serve")
    stack.driver().dm(ANA, "hello run", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"], timeout=20)
    assert replies_to(stack) == Counter({"re: hello run": 1})
    stack.stop("run")
    assert proc.returncode == 0
    workers = redis.Redis.from_url(stack.env["REDIS_URL"]).smembers("rq:workers")
    assert workers == set(), "every worker deregistered on shutdown"


def test_sigterm_to_a_worker_mid_turn_finishes_that_turn_once(stack: Stack) -> None:
    stack.up()
    stack.llm.set_responder(echo(delay=2.0))
    stack.driver().dm(ANA, "slow question", channel=NOVA_DM)
    stack.llm.wait_for_requests(1)
    stack.stop("worker", sig=signal.SIGTERM)  # warm shutdown: the current job completes
    stack.start_worker("worker2")
    wait_until(lambda: replies_to(stack), what="the reply")
    time.sleep(1.0)
    assert replies_to(stack) == Counter({"re: slow question": 1})
    assert len(stack.llm.requests) == 1


def test_sigterm_to_the_web_process_during_a_burst_loses_no_acked_message(stack: Stack) -> None:
    stack.up()
    stack.llm.set_responder(echo())
    driver = stack.driver()
    acked: list[str] = []
    stop = threading.Event()
    people = people_dming_nova(stack, 400)

    def burst() -> None:
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            user, dm = people[i - 1]
            try:
                status, _, _ = driver.dm(user, f"m{i}", channel=dm)
            except OSError:
                continue
            if status == 200:
                acked.append(f"re: m{i}")

    sender = threading.Thread(target=burst)
    sender.start()
    wait_until(lambda: len(acked) >= 20, what="some acks")
    stack.stop("web", sig=signal.SIGTERM)
    stop.set()
    sender.join(30)
    wait_until(lambda: set(acked) <= set(replies_to(stack)), timeout=60, what=f"{len(acked)} acked messages answered")
    assert all(count == 1 for count in replies_to(stack).values())


def test_two_web_processes_and_two_workers_answer_each_message_once(stack: Stack) -> None:
    stack.llm.set_responder(echo())
    stack.start_web()
    second_port = free_port()
    stack.start("web2", "serve", "--host", "127.0.0.1", "--port", str(second_port))
    wait_until(lambda: healthy(second_port), timeout=30, what="second web process")
    stack.start_worker("worker")
    stack.start_worker("worker2")
    drivers = [stack.driver(), SlackDriver(f"http://127.0.0.1:{second_port}/slack/nova/events", NOVA["secret"], bot_user_id=NOVA["user"], slack=stack.slack)]
    sent = []
    for i, (user, dm) in enumerate(people_dming_nova(stack, 100)):
        first, second = (drivers[0], drivers[1]) if i % 2 else (drivers[1], drivers[0])
        status, event_id, ts = first.dm(user, f"q{i}", channel=dm)
        assert status == 200
        sent.append(f"re: q{i}")
        if i % 3 == 0:  # Slack retries this one on the *other* web process
            event = {"type": "message", "user": user, "text": f"q{i}", "ts": ts, "channel": dm, "channel_type": "im"}
            assert second.send_event(event, event_id=event_id, retry_num=1)[0] == 200
    wait_until(lambda: set(sent) <= set(replies_to(stack)), timeout=60, what="all 100 answered")
    time.sleep(1.0)
    assert replies_to(stack) == Counter({text: 1 for text in sent})
    assert len(stack.llm.requests) == 100


def test_a_turn_does_not_wait_behind_500_queued_workflow_steps(stack: Stack) -> None:
    connection = redis.Redis.from_url(stack.env["REDIS_URL"])
    workflows = Queue("workflows", connection=connection)
    for _ in range(500):
        workflows.enqueue("time.sleep", 0.02)
    stack.llm.set_responder(echo())
    stack.up()
    stack.driver().dm(ANA, "urgent", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"], timeout=20)
    assert workflows.count > 250, f"only {workflows.count} of 500 steps were still waiting"


def test_capacity_is_visible_in_metrics_and_status(stack: Stack) -> None:
    import json as _json

    stack.llm.set_responder(echo())
    stack.up(workers=2)
    stack.driver().dm(ANA, "hello", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"])
    def settled() -> str | None:
        text = stack.scrape()
        return text if 'teammates_workers{state="idle"} 2.0' in text and "turn_latency_seconds_count 1.0" in text else None

    text = wait_until(settled, what="both workers idle and the turn counted")
    assert 'teammates_queue_depth{queue="turns"} 0.0' in text
    assert "teammates_turn_latency_seconds_count 1.0" in text
    result = stack.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    report = _json.loads(result.stdout)
    assert report["workers"] == {"busy": 0, "idle": 2}
    assert report["turns"]["answered"] == 1 and report["turns"]["p95_seconds_at_most"] > 0
    assert report["tokens"]["nova"]["input"] > 0 and report["tokens"]["nova"]["output"] > 0


def test_posts_from_many_runs_to_one_channel_are_paced(stack: Stack) -> None:
    config = (stack.workdir / "teammates.yml").read_text()
    (stack.workdir / "teammates.yml").write_text(config.replace("channel_post_interval: 0", "channel_post_interval: 0.4"))
    stack.start_web()
    stack.start("pool", "worker", "--concurrency", "6")
    (stack.workdir / "wf.yml").write_text("""
name: shout
member: nova
trigger: {manual: {}}
inputs: [{name: n, type: string}]
steps:
  - id: say
    post: {channel: C0GENERAL1, text: "run {{ inputs.n }}"}
""")
    assert stack.cli("workflow", "apply", "wf.yml").returncode == 0
    import asyncio

    from jobs.runs.start import start_run
    from storage.db import Database

    async def start_all() -> None:  # six runs at the same moment
        db = Database(stack.env["DATABASE_URL"])
        connection = redis.Redis.from_url(stack.env["REDIS_URL"])
        try:
            await asyncio.gather(*(start_run(db, connection, "shout", "manual", {"n": str(i)}) for i in range(6)))
        finally:
            await db.close()

    asyncio.run(start_all())
    posts = stack.slack.wait_for_posts(6, token=NOVA["token"], timeout=60)
    assert sorted(p["text"] for p in posts) == [f"run {i}" for i in range(6)]
    stamps = sorted(float(p["ts"]) for p in posts)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.3, gaps  # paced 0.4 s apart; what lies between the pacing and the post may vary by tens of ms under load
