"""Approvals in Slack, end to end, beyond the basics of test_approvals.py: quorums, user groups,
DM copies, reminders and timeouts, Try again, `runs cancel`, replayed and forged clicks.
Real web and worker processes over signed HTTP; assertions on what people see in Slack."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import redis
from rq.registry import StartedJobRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url

from jobs import queues
from storage import workflows as store
from storage.db import Database
from storage.models import Approval
from tests.conftest import ANA, BOB, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Fail, Reply
from tests.fakes.slack_driver import SlackDriver
from tests.test_approvals import (
    assert_valid_blocks,
    assert_valid_view,
    button,
    click,
    requests_posted,
    status_line,
)
from tests.test_workflows import apply, start

Json = dict[str, Any]
CAROL = "U0CAROL001"
FORM = "application/x-www-form-urlencoded"


def ask(stack: Stack, approval: str, name: str = "ask") -> str:
    """Apply a workflow whose approval (the given flow-mapping keys) guards one post, and start it."""
    apply(stack, f"""
name: {name}
member: nova
trigger: {{manual: {{}}}}
steps:
  - id: review
    approval: {{message: "Send the note?", show: "Dear client", {approval}}}
  - id: send
    post: {{channel: {GENERAL}, text: "SENT: {{{{ steps.review.content }}}}"}}
""", f"{name}.yml")
    return start(stack, name)


def sent(stack: Stack) -> list[Json]:
    """What the step after the approval posted."""
    return [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text", "").startswith("SENT:")]


def seen(message: Json) -> Json:
    """A card as a person sees it, checked against Slack's own block models."""
    assert_valid_blocks(message["blocks"])
    return message


def current(stack: Stack, message: Json) -> Json:
    """The message as it is now (after any chat.update)."""
    return seen(next(p for p in stack.slack.posts_by(NOVA["token"]) if p["ts"] == message["ts"] and p["channel"] == message["channel"]))


def notices(stack: Stack, channel: str, user: str) -> list[Json]:
    return [e for e in stack.slack.ephemerals(channel) if e["user"] == user]


def read_db(stack: Stack, query: Callable[[Any], Awaitable[Any]]) -> Any:
    """Read the product's database directly (cheaper than a CLI process per poll)."""

    async def read() -> Any:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return await query(session)
        finally:
            await db.close()

    return asyncio.run(read())


def run_of(stack: Stack, run_id: str) -> Json:
    """The run's status and each step's {status, output}, by step path."""

    async def query(session: Any) -> Json:
        run = await store.run(session, run_id)
        assert run is not None
        steps = await store.steps(session, run_id)
        return {"status": run.status, "steps": {path: {"status": row.status, "output": row.output} for path, row in steps.items()}}

    return dict(read_db(stack, query))


def wait_run(stack: Stack, run_id: str, *statuses: str, timeout: float = 30) -> Json:
    return dict(wait_until(lambda: (run := run_of(stack, run_id))["status"] in statuses and run, timeout=timeout, interval=0.1,
                           what=f"run {run_id} to be {statuses}"))


def quiet(stack: Stack, seconds: float = 1.5) -> None:
    """Give the worker time to do something it should not (then the caller checks it did not)."""
    threading.Event().wait(seconds)


# ---------------------------------------------------------------------------- quorum


def test_quorum_one_approval_shows_1_of_2_and_a_second_click_by_the_same_person_counts_nothing(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, f"approvers: [ana, {BOB}], quorum: 2, to: {GENERAL}")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    seen(request)
    assert "(2 needed)" in json.dumps(request["blocks"])

    assert click(stack, request, "approval.approve", ANA) == 200
    counted = wait_until(lambda: "1 of 2" in status_line(current(stack, request)) and current(stack, request), what="1 of 2")
    assert f"<@{ANA}>" in status_line(counted)
    assert "approval.approve" in json.dumps(counted["blocks"])  # still open for the second approver
    assert click(stack, request, "approval.approve", ANA) == 200
    [again] = wait_until(lambda: notices(stack, GENERAL, ANA), what="a notice: approved already")
    assert "already" in again["text"] and "1 more" in again["text"]
    assert wait_run(stack, run_id, "waiting")["status"] == "waiting"
    assert sent(stack) == []

    assert click(stack, request, "approval.approve", BOB) == 200
    assert wait_run(stack, run_id, "completed", "failed")["status"] == "completed"
    assert [p["text"] for p in sent(stack)] == ["SENT: Dear client"]
    done = wait_until(lambda: "Approved by" in status_line(current(stack, request)) and current(stack, request), what="approved")
    assert f"<@{ANA}>" in status_line(done) and f"<@{BOB}>" in status_line(done)


def test_quorum_two_approvers_clicking_at_once_resume_the_run_once_and_both_show(stack: Stack) -> None:
    """Three requests of one run (a foreach), each with quorum 2: Ana and Bob click all six
    copies at once, on two workers, so the two approvals of a request race (a lost update
    would leave it at "1 of 2" for ever)."""
    stack.up(workers=2)
    apply(stack, f"""
name: trio
member: nova
trigger: {{manual: {{}}}}
inputs:
  - {{name: items, type: list, default: [a, b, c]}}
steps:
  - id: each
    foreach: "{{{{ inputs.items }}}}"
    concurrency: 3
    steps:
      - id: review
        approval: {{message: "Send {{{{ item }}}}?", show: "Note {{{{ item }}}}", approvers: [ana, {BOB}], quorum: 2}}
      - id: send
        post: {{channel: {GENERAL}, text: "SENT: {{{{ steps.review.content }}}}"}}
""", "trio.yml")
    run_id = start(stack, "trio")
    # to: thread without an origin thread: a DM copy to each approver.
    copies = wait_until(lambda: len(requests_posted(stack)) == 6 and requests_posted(stack), what="a copy per approver and request")
    for copy in copies:
        seen(copy)
    clicks = [(c, ANA if c["channel"] == NOVA_DM else BOB) for c in copies]
    assert sorted(user for _, user in clicks) == sorted([ANA, BOB] * 3)
    barrier = threading.Barrier(len(clicks))
    statuses: list[int] = []

    def approve(copy: Json, user: str) -> None:
        barrier.wait()
        statuses.append(click(stack, copy, "approval.approve", user))

    threads = [threading.Thread(target=approve, args=pair) for pair in clicks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    run = wait_run(stack, run_id, "completed", "failed")
    assert run["status"] == "completed"
    assert [run["steps"][f"each[{i}]/review"]["output"]["decision"] for i in range(3)] == ["approved"] * 3
    quiet(stack)
    assert sorted(p["text"] for p in sent(stack)) == ["SENT: Note a", "SENT: Note b", "SENT: Note c"]  # each resumed once
    for copy in copies:
        done = wait_until(lambda c=copy: "Approved by" in status_line(current(stack, c)) and current(stack, c), what="every copy approved")
        assert f"<@{ANA}>" in status_line(done) and f"<@{BOB}>" in status_line(done), status_line(done)
    bob_dm = next(c["channel"] for c in copies if c["channel"] != NOVA_DM)
    assert notices(stack, NOVA_DM, ANA) == [] and notices(stack, bob_dm, BOB) == []  # no click was turned away


@contextmanager
def approvals_held(stack: Stack) -> Iterator[None]:
    """Hold a lock that lets the approvals table be read but not written (SQLite: the write
    lock; PostgreSQL: EXCLUSIVE on the table), so that clicks handled meanwhile all read the
    same revision and then wait at their write: the race of two approvals, every time."""
    url = stack.env["DATABASE_URL"]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(str(make_url(url).database), isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import asyncpg

    held, release = threading.Event(), threading.Event()

    async def hold() -> None:
        pg = await asyncpg.connect(url)
        try:
            async with pg.transaction():
                await pg.execute("LOCK TABLE approvals IN EXCLUSIVE MODE")
                held.set()
                await asyncio.to_thread(release.wait)
        finally:
            await pg.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def test_quorum_two_approvals_that_read_the_same_revision_both_count(stack: Stack) -> None:
    """Ana's and Bob's clicks are both handled while the approval cannot be written: both
    read it with no approval yet, then write one after the other. The second must notice it
    lost the race and count again, or the request stays at "1 of 2" for ever."""
    stack.up(workers=2)
    run_id = ask(stack, f"approvers: [ana, {BOB}], quorum: 2, to: {GENERAL}")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    wait_run(stack, run_id, "waiting")
    stack.stop("worker")
    stack.stop("worker1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(lambda user: click(stack, request, "approval.approve", user), (ANA, BOB))) == [200, 200]
    turns = StartedJobRegistry(queues.TURNS, connection=redis.Redis.from_url(stack.env["REDIS_URL"]))
    with approvals_held(stack):
        stack.start_worker("worker")
        stack.start_worker("worker1")
        wait_until(lambda: len(turns.get_job_ids()) == 2, timeout=30, what="both clicks being handled at once")
        quiet(stack, 1.0)  # both read the request and wait to write
    assert wait_run(stack, run_id, "completed", "failed")["status"] == "completed"
    done = wait_until(lambda: "Approved by" in status_line(current(stack, request)) and current(stack, request), what="approved")
    assert f"<@{ANA}>" in status_line(done) and f"<@{BOB}>" in status_line(done), status_line(done)
    assert [p["text"] for p in sent(stack)] == ["SENT: Dear client"]
    assert notices(stack, GENERAL, ANA) == [] and notices(stack, GENERAL, BOB) == []


# ---------------------------------------------------------------------------- user groups


def test_a_user_group_approver_may_approve_an_admin_may_too_and_anyone_else_is_refused(stack: Stack) -> None:
    stack.slack.add_user(CAROL, "carol", real_name="Carol Smit")
    stack.slack.add_member(GENERAL, CAROL)
    stack.slack.add_group("S0FINANCE", [BOB])
    stack.up()
    first = ask(stack, f"approvers: [S0FINANCE], to: {GENERAL}")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    seen(request)

    assert click(stack, request, "approval.approve", CAROL) == 200
    [refused] = wait_until(lambda: notices(stack, GENERAL, CAROL), what="a private notice to Carol")
    assert "<!subteam^S0FINANCE>" in refused["text"] and "admin" in refused["text"]
    # The reject form opens for anyone (a click proves nothing); its submission is checked too.
    assert click(stack, request, "approval.reject", CAROL) == 200
    [modal] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the reason form")
    assert_valid_view(modal)
    assert stack.driver().view_submission(modal, {"reason": "not mine to say"}, user_id=CAROL)[0] == 200
    wait_until(lambda: len(notices(stack, GENERAL, CAROL)) == 2, what="a second private notice to Carol")
    assert "Waiting for" in status_line(current(stack, request))
    assert wait_run(stack, first, "waiting")["status"] == "waiting"

    assert click(stack, request, "approval.approve", BOB) == 200
    assert wait_run(stack, first, "completed", "failed")["status"] == "completed"
    wait_until(lambda: f"Approved by <@{BOB}>" in status_line(current(stack, request)), what="approved by Bob")
    assert len(sent(stack)) == 1

    second = start(stack, "ask")
    request2 = wait_until(lambda: len(requests_posted(stack)) == 2 and requests_posted(stack)[1], what="the second request")
    assert click(stack, request2, "approval.approve", ANA) == 200  # Ana is an admin, not in the group
    assert wait_run(stack, second, "completed", "failed")["status"] == "completed"
    wait_until(lambda: f"Approved by <@{ANA}>" in status_line(current(stack, request2)), what="approved by Ana")
    assert len(sent(stack)) == 2
    assert len(notices(stack, GENERAL, CAROL)) == 2 and notices(stack, GENERAL, BOB) == []


# ---------------------------------------------------------------------------- DM copies


def test_to_dm_posts_a_copy_to_each_approver_and_one_decision_updates_both(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, f"approvers: [ana, {BOB}], to: dm")
    copies = wait_until(lambda: len(requests_posted(stack)) == 2 and requests_posted(stack), what="two DM copies")
    opened = {c["params"].get("users") for c in stack.slack.calls_to("conversations.open") if c["token"] == NOVA["token"]}
    assert {ANA, BOB} <= opened
    channels = {c["channel"] for c in copies}
    assert NOVA_DM in channels and len(channels) == 2 and all(c.startswith("D") for c in channels)
    for copy in copies:
        seen(copy)
    ana_copy = next(c for c in copies if c["channel"] == NOVA_DM)

    assert click(stack, ana_copy, "approval.approve", ANA) == 200
    assert wait_run(stack, run_id, "completed", "failed")["status"] == "completed"
    for copy in copies:
        done = wait_until(lambda c=copy: "Approved by" in status_line(current(stack, c)) and current(stack, c), what="every copy updated")
        assert f"<@{ANA}>" in status_line(done)
        assert "approval.approve" not in json.dumps(done["blocks"])
    assert len(sent(stack)) == 1


# ---------------------------------------------------------------------------- time


def test_a_reminder_marks_the_request_then_on_timeout_skip_expires_it_and_nothing_follows(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, "timeout: 6s, remind_at: 50%, on_timeout: skip")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert "Reminder" not in status_line(request)
    reminded = wait_until(lambda: "Reminder" in status_line(current(stack, request)) and current(stack, request),
                          timeout=15, interval=0.1, what="the reminder")
    assert "approval.approve" in json.dumps(reminded["blocks"])  # reminded while still open

    run = wait_run(stack, run_id, "completed", "failed", timeout=20)
    assert run["status"] == "completed"
    assert run["steps"]["review"]["output"]["decision"] == "expired"
    assert run["steps"]["send"]["status"] == "skipped"
    expired = wait_until(lambda: "Expired" in status_line(current(stack, request)) and current(stack, request), what="Expired")
    assert "approval.approve" not in json.dumps(expired["blocks"])
    assert sent(stack) == []


def test_on_timeout_abort_fails_the_run_and_the_next_step_never_starts(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, "timeout: 2s, on_timeout: abort")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    run = wait_run(stack, run_id, "completed", "failed", timeout=20)
    assert run["status"] == "failed"
    assert run["steps"]["review"]["status"] == "failed"
    assert list(run["steps"]) == ["review"]  # the next step never started
    wait_until(lambda: "Expired" in status_line(current(stack, request)), what="Expired")
    quiet(stack)
    assert sent(stack) == []


def test_on_timeout_escalate_asks_the_escalation_approver_by_dm_who_can_approve(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, f"approvers: [ana], timeout: 4s, remind_at: never, on_timeout: escalate, escalate_to: {BOB}")
    [first] = wait_until(lambda: requests_posted(stack), what="the approval request to Ana")
    assert first["channel"] == NOVA_DM
    escalated = wait_until(lambda: [p for p in requests_posted(stack) if p["channel"] != NOVA_DM], timeout=15, what="Bob's DM copy")
    [to_bob] = escalated
    seen(to_bob)
    assert any(c["params"].get("users") == BOB for c in stack.slack.calls_to("conversations.open"))
    assert "approval.approve" in json.dumps(to_bob["blocks"])
    assert click(stack, to_bob, "approval.approve", BOB) == 200
    run = wait_run(stack, run_id, "completed", "failed")
    assert run["status"] == "completed" and run["steps"]["review"]["output"]["by"] == BOB
    assert [p["text"] for p in sent(stack)] == ["SENT: Dear client"]
    for copy in (first, to_bob):
        wait_until(lambda c=copy: f"Approved by <@{BOB}>" in status_line(current(stack, c)), what="every copy approved by Bob")


def test_an_escalated_approver_is_reminded_too(stack: Stack) -> None:
    stack.up()
    ask(stack, f"approvers: [ana], timeout: 3s, remind_at: 50%, on_timeout: escalate, escalate_to: {BOB}")
    [first] = wait_until(lambda: requests_posted(stack), what="the approval request to Ana")
    [to_bob] = wait_until(lambda: [p for p in requests_posted(stack) if p["channel"] != NOVA_DM], timeout=15, what="Bob's DM copy")

    def reminders(copy: Json) -> list[Json]:
        return [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("thread_ts") == copy["ts"] and "reminder" in p.get("text", "")]

    wait_until(lambda: reminders(to_bob), timeout=15, what="a reminder under Bob's copy")
    assert f"<@{BOB}>" in reminders(to_bob)[0]["text"]
    assert len(reminders(first)) == 1  # Ana was reminded once, before the escalation, not again


# ---------------------------------------------------------------------------- Try again


def test_try_again_is_refused_to_someone_else_and_answers_for_the_author(stack: Stack) -> None:
    stack.slack.add_user(CAROL, "carol", real_name="Carol Smit")
    stack.slack.add_member(GENERAL, CAROL)
    stack.up()
    stack.llm.set_responder(lambda _body: Fail(status=529))
    stack.driver().mention(BOB, "Draft the reminder for Acme", channel=GENERAL)
    [apology] = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p["text"].startswith("Sorry")],
                           what="the apology")
    seen(apology)
    assert button(apology, "retry_turn")
    stack.llm.set_responder(None)
    stack.llm.script(Reply(text="Draft: Dear Acme, ..."))
    asked = len(stack.llm.requests)

    assert click(stack, apology, "retry_turn", CAROL) == 200
    [refused] = wait_until(lambda: notices(stack, GENERAL, CAROL), what="a private notice to Carol")
    assert f"<@{BOB}>" in refused["text"] and "admin" in refused["text"]
    quiet(stack, 1.0)
    assert len(stack.llm.requests) == asked
    assert [p for p in stack.slack.posts_by(NOVA["token"]) if p["text"].startswith("Draft:")] == []

    assert click(stack, apology, "retry_turn", BOB) == 200
    answer = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p["text"].startswith("Draft:")], what="the answer")
    assert [p["text"] for p in answer] == ["Draft: Dear Acme, ..."]
    assert notices(stack, GENERAL, BOB) == []


# ---------------------------------------------------------------------------- cancel


def test_runs_cancel_on_a_waiting_approval_shows_cancelled_on_the_request(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, f"approvers: [ana, {BOB}], to: dm")
    copies = wait_until(lambda: len(requests_posted(stack)) == 2 and requests_posted(stack), what="two DM copies")
    assert wait_run(stack, run_id, "waiting")["status"] == "waiting"
    result = stack.cli("runs", "cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert wait_run(stack, run_id, "cancelled")["status"] == "cancelled"
    for copy in copies:
        done = wait_until(lambda c=copy: "Cancelled" in status_line(current(stack, c)) and current(stack, c), what="Cancelled")
        assert "approval.approve" not in json.dumps(done["blocks"])
    # A click on a cancelled request changes nothing and says so.
    ana_copy = next(c for c in copies if c["channel"] == NOVA_DM)
    assert click(stack, ana_copy, "approval.approve", ANA) == 200
    [notice] = wait_until(lambda: notices(stack, NOVA_DM, ANA), what="a notice")
    assert "cancelled" in notice["text"]
    assert sent(stack) == []


# ---------------------------------------------------------------------------- replays and forgeries


def click_body(stack: Stack, message: Json, action_id: str, user: str) -> bytes:
    """The form body Slack would send for one click, built once (so it can be delivered twice)."""
    captured: list[bytes] = []

    class Capture(SlackDriver):
        def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            captured.append(body)
            return 200, b""

    real = stack.driver()
    Capture(real.url, real.signing_secret, bot_user_id=real.bot_user_id).block_action(
        action_id, button(message, action_id), user_id=user, channel_id=message["channel"], message_ts=message["ts"])
    return captured[0]


def test_a_replayed_click_decides_once_and_a_forged_one_is_refused_with_401(stack: Stack) -> None:
    stack.up()
    run_id = ask(stack, "approvers: [ana]")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    driver = stack.driver()
    body = click_body(stack, request, "approval.approve", ANA)

    status, _ = driver.post(*driver.build(body, FORM, bad_signature=True))
    assert status == 401
    quiet(stack, 1.0)
    assert "Waiting for" in status_line(current(stack, request))
    assert run_of(stack, run_id)["status"] == "waiting"

    first = driver.post(*driver.build(body, FORM))[0]
    second = driver.post(*driver.build(body, FORM))[0]  # the same delivery again
    assert (first, second) == (200, 200)
    assert wait_run(stack, run_id, "completed", "failed")["status"] == "completed"
    # A different click after the decision is told "already approved": so a replay that were
    # taken for a click would show up as a second notice.
    assert click(stack, request, "approval.approve", ANA) == 200
    wait_until(lambda: notices(stack, NOVA_DM, ANA), what="the notice for the later click")
    quiet(stack, 1.0)
    assert len(notices(stack, NOVA_DM, ANA)) == 1
    assert len(sent(stack)) == 1
    [row] = approvals_of(stack, run_id)
    assert [d["decision"] for d in row.decisions] == ["approved"]


def approvals_of(stack: Stack, run_id: str) -> list[Any]:
    """The run's approval rows, as stored."""

    async def query(session: Any) -> list[Any]:
        return list((await session.execute(select(Approval).where(Approval.run_id == run_id))).scalars())

    return list(read_db(stack, query))
