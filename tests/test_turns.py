"""The turn job under crashes, dead channels and quick messages: every message of a
conversation is answered once, in order, with the answers before it in its context; one that
cannot be answered ends `failed` with its reason, and costs no more LLM calls."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from typing import Any

from tests.conftest import ANA, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply

# Lost turns are found fast: a killed worker's lease lasts 10 s, the sweeper looks every second.
FAST = "workers: {step_lease: 3, reconcile_every: 1, channel_post_interval: 0, turn_timeout: 10, sweep_every: 1, sweep_after: 1}"


def fast_sweeper(stack: Stack) -> None:
    path = stack.workdir / "teammates.yml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("workers:"))
    path.write_text(text.replace(old, FAST))


def replies(stack: Stack) -> Counter[str]:
    return Counter(p["text"] for p in stack.slack.posts_by(NOVA["token"]))


def test_a_worker_killed_mid_turn_leaves_the_message_answered_exactly_once(stack: Stack) -> None:
    fast_sweeper(stack)
    stack.up()
    first = threading.Event()

    def respond(_body: dict[str, Any]) -> Reply:
        if not first.is_set():
            first.set()
            return Reply(text="never delivered", delay=4.0)  # the worker dies while waiting
        return Reply(text="The answer.")

    stack.llm.set_responder(respond)
    stack.driver().dm(ANA, "what is overdue?", channel=NOVA_DM)
    stack.llm.wait_for_requests(1)
    stack.stop("worker", sig=signal.SIGKILL)
    stack.start_worker("worker2")
    stack.slack.wait_for_posts(1, token=NOVA["token"], timeout=40)
    time.sleep(3)  # several sweeps later
    assert replies(stack) == Counter({"The answer.": 1})


def status_json(stack: Stack) -> dict[str, Any]:
    done = stack.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def failed_count(stack: Stack) -> int:
    """How many messages ended `failed`, read from the database in this process: cheap to poll
    (a `teammates status` per poll would start a Python each time); the operator's view is
    asserted with the CLI once this says the moment has come."""
    from storage import inbound
    from storage.db import Database

    async def read() -> int:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                count, _ = await inbound.failed(session)
                return count
        finally:
            await db.close()

    return asyncio.run(read())


def activity_rows(stack: Stack, action: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from storage.db import Database
    from storage.models import Activity

    async def read() -> list[dict[str, Any]]:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                rows = await session.execute(select(Activity).where(Activity.action == action))
                return [{"description": a.description, "details": a.details, "actor": a.actor_id, "member": a.member_id}
                        for a in rows.scalars()]
        finally:
            await db.close()

    return asyncio.run(read())


def test_a_reply_that_can_never_be_posted_is_not_regenerated_and_ends_failed_with_its_reason(stack: Stack) -> None:
    fast_sweeper(stack)
    stack.up()
    stack.llm.set_responder(lambda _body: Reply(text="Here is the Q3 report."))
    stack.slack.fail_channel(GENERAL, "channel_not_found")  # every call on it, for good
    stack.driver().mention(ANA, "the Q3 report please", channel=GENERAL)

    wait_until(lambda: failed_count(stack), timeout=20, interval=0.2, what="the message to end failed")
    [row] = status_json(stack)["failed_messages"]["latest"]
    assert row["reason"] == "channel_not_found" and row["member"] == "nova"
    time.sleep(5)  # five sweeps and RQ's first retries later: nothing runs the turn again
    assert len(stack.llm.requests) <= 2
    assert status_json(stack)["failed_messages"]["count"] == 1
    shown = stack.cli("status")
    assert "failed messages: 1" in shown.stdout and "channel_not_found" in shown.stdout
    [line] = activity_rows(stack, "message.failed")
    assert "channel_not_found" in line["description"]
    # Ana is told, in her DM with Nova, since the channel is gone.
    [notice] = [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM]
    assert "the Q3 report please" in notice["text"] and "can no longer reach" in notice["text"]


def answer_to(body: dict[str, Any]) -> str:
    """The newest user turn as plain text (merged lines stay joined)."""
    last = body["messages"][-1]["content"]
    return last if isinstance(last, str) else " ".join(b.get("text", "") for b in last if b.get("type") == "text")


def transcript(body: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for m in body["messages"]:
        c = m["content"]
        out.append((m["role"], c if isinstance(c, str) else " ".join(b.get("text", "") for b in c if b.get("type") == "text")))
    return out


def distinct(bodies: Any) -> list[dict[str, Any]]:
    """Requests as the turns made them: the SDK's own retry of a slow call (a loaded machine)
    sends the same body again."""
    seen: dict[str, dict[str, Any]] = {}
    for body in bodies:
        seen.setdefault(json.dumps(body["messages"], sort_keys=True), body)
    return list(seen.values())


def test_a_message_sent_just_after_a_reply_lands_is_answered_with_that_reply_in_its_context(stack: Stack) -> None:
    stack.up(workers=2)
    stack.llm.set_responder(lambda body: Reply(text=f"Answer to: {answer_to(body)}"))
    stack.slack.delay_method("chat.postMessage", 0.5)  # the poster hears back 0.5 s after the post lands
    nova = stack.driver()
    nova.dm(ANA, "question 1", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"])
    time.sleep(0.01)
    nova.dm(ANA, "question 2", channel=NOVA_DM)
    posts = stack.slack.wait_for_posts(2, token=NOVA["token"])
    time.sleep(1)
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"])] == ["Answer to: question 1", "Answer to: question 2"]
    [second] = distinct(r["body"] for r in stack.llm.requests if answer_to(r["body"]) == "question 2")
    assert transcript(second) == [("user", "question 1"), ("assistant", "Answer to: question 1"), ("user", "question 2")]
    assert len(posts) == 2


def test_two_messages_sent_together_get_answers_that_never_repeat_each_other(stack: Stack) -> None:
    stack.up(workers=2)
    stack.llm.set_responder(lambda body: Reply(text=f"Answer to: {answer_to(body)}", delay=1.0))
    nova = stack.driver()
    nova.dm(ANA, "first question", channel=NOVA_DM)
    nova.dm(ANA, "second question", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"])
    time.sleep(4)  # a second answer, if any, has come by now
    answers = [p["text"] for p in stack.slack.posts_by(NOVA["token"])]
    requests = distinct(r["body"] for r in stack.llm.requests)
    assert len(answers) == len(requests) and len(answers) in (1, 2)
    asked = [answer_to(body) for body in requests]
    if len(answers) == 1:  # folded: one answer that read both
        assert asked == ["first question\n\nsecond question"]
    else:  # in order, the second with the first answer in its context
        assert asked == ["first question", "second question"]
        assert ("assistant", answers[0]) in transcript(requests[1])


def test_a_retried_turn_never_posts_a_tool_message_twice(stack: Stack) -> None:
    fast_sweeper(stack)
    stack.up()
    stalled = threading.Event()

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
            if not stalled.is_set():
                stalled.set()
                return Reply(text="never delivered", delay=4.0)  # the worker dies here
            return Reply(text="Posted the heads-up.")
        return Reply(tool_uses=[{"name": "post_message", "input": {"channel": GENERAL, "text": "Heads up: invoices are due"}}])

    stack.llm.set_responder(respond)
    stack.driver().dm(ANA, "warn the team about the invoices", channel=NOVA_DM)
    wait_until(stalled.is_set, timeout=20, what="the turn to stall after its post")
    stack.stop("worker", sig=signal.SIGKILL)
    stack.start_worker("worker2")
    wait_until(lambda: replies(stack)["Posted the heads-up."], timeout=40, what="the final answer")
    time.sleep(2)
    assert replies(stack) == Counter({"Heads up: invoices are due": 1, "Posted the heads-up.": 1})


def test_a_turn_that_keeps_failing_ends_failed_after_its_attempts_and_the_person_is_told(stack: Stack) -> None:
    """Not a platform refusal: something in the turn itself raises on every attempt (here a
    member row naming a tool no registry has, as a hand-edited database might). RQ retries it;
    after the last attempt the message is `failed` with its reason, and nothing runs it again."""
    from sqlalchemy import update

    from storage.db import Database
    from storage.models import Member

    fast_sweeper(stack)
    stack.up()

    async def break_nova() -> None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                await session.execute(update(Member).where(Member.id == "nova").values(tools=["no_such_tool"]))
        finally:
            await db.close()

    asyncio.run(break_nova())
    stack.driver().dm(ANA, "Is invoice 7 paid?", channel=NOVA_DM)

    wait_until(lambda: failed_count(stack), timeout=60, interval=0.2, what="the message to end failed")
    [row] = status_json(stack)["failed_messages"]["latest"]
    assert 1 < row["attempts"] <= 3 and "no_such_tool" in row["reason"], row  # retried, then capped
    assert not stack.llm.requests  # it failed before asking the model, every time
    [notice] = [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM]
    assert "Is invoice 7 paid?" in notice["text"]
    time.sleep(3)  # three more sweeps: nothing takes it up again
    assert status_json(stack)["failed_messages"]["count"] == 1
    assert len(stack.slack.posts_by(NOVA["token"])) == 1
