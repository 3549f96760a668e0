"""A run started from a conversation shows its progress there, in one message that is updated as
its steps change; when it ends, the person who asked hears how it went — in that thread, or in a
DM when the run came from elsewhere — if it did something worth telling or failed, and only once.
Real web and worker processes, real Redis, the Slack fake."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from agents.messages import Card, MessageRef, Task
from agents.tools.registry import register
from jobs.people import People
from jobs.runs import approvals, progress
from jobs.runs.origin import Origin
from jobs.runs.outcomes import summarize
from jobs.runs.progress import progress_card
from jobs.runs.start import start_run
from jobs.workflows.definition import WorkflowDefinition
from storage.models import Activity, StepRun, WorkflowRun
from tests.conftest import ANA, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.slack_api import FakeSlack
from tests.test_approvals import assert_valid_blocks
from tests.test_workflows import apply, pending_approval, runtime, wait_status

Json = dict[str, Any]

THREE_STEPS = """\
name: tidy-books
member: nova
trigger: {manual: {}}
steps:
  - {id: look_up_time, tool: current_time}
  - {id: let_it_settle, wait: 3s}
  - {id: check_again, tool: current_time}
"""


def start_from_chat(stack: Stack, workflow: str, conversation: str, thread: str | None, **inputs: Any) -> str:
    """Start a run as the builder's chat tools will (`run_workflow_now`, a chat-built schedule):
    in-process through `jobs.runs.start.start_run` with a chat origin. There is no public way
    to start a run from a conversation yet (the workflow tools come with issue #14's builder
    work); the CLI's runs have no conversation."""

    async def go() -> str:
        rt = runtime(stack)
        try:
            origin = Origin(via="chat", platform="slack", conversation=conversation, thread=thread, person="ana")
            run_id = await start_run(rt.db, rt.redis, workflow, "manual", inputs, origin=origin)  # type: ignore[arg-type]
            assert run_id is not None
            return run_id
        finally:
            await rt.db.close()

    return asyncio.run(go())


def thread_posts(stack: Stack, channel: str, thread: str) -> list[Json]:
    """Nova's replies in the thread, as they are now (updates applied)."""
    return [m for m in stack.slack.messages(channel, thread) if m.get("thread_ts") == thread and m.get("bot_id") == NOVA["bot"]]


def effect_of(message: Json) -> str:
    return str(((message.get("metadata") or {}).get("event_payload") or {}).get("effect_id", ""))


def plan_of(message: Json) -> Json:
    [plan] = [b for b in message.get("blocks") or [] if b["type"] == "plan"]
    return plan


def activity(stack: Stack, run_id: str, action: str) -> list[Activity]:
    async def go() -> list[Activity]:
        rt = runtime(stack)
        try:
            async with rt.db.session() as session:
                rows = await session.execute(select(Activity).where(Activity.run_id == run_id, Activity.action == action))
                return list(rows.scalars())
        finally:
            await rt.db.close()

    return asyncio.run(go())


def ask_again(stack: Stack, run_id: str) -> None:
    """What the finishing code running twice does: ask for the run's update once more."""
    rt = runtime(stack)
    assert rt.redis is not None
    progress.request(rt.redis, run_id)
    asyncio.run(rt.db.close())


def test_a_run_from_a_thread_shows_its_steps_in_one_message_updated_until_all_are_complete(stack: Stack) -> None:
    stack.up(workers=2)
    apply(stack, THREE_STEPS)
    thread = stack.slack.add_message(GENERAL, ANA, "@Nova tidy the books please")
    run_id = start_from_chat(stack, "tidy-books", GENERAL, thread)

    def shown() -> list[Json]:
        return [m for m in thread_posts(stack, GENERAL, thread) if effect_of(m) == f"progress-{run_id}"]

    # while the wait step waits, the message shows the first step done and the wait under way
    wait_until(lambda: shown() and [t["status"] for t in plan_of(shown()[0])["tasks"]][:2] == ["complete", "in_progress"],
               timeout=20, what="the progress message with the first step done")
    wait_status(stack, run_id, "completed")
    wait_until(lambda: "Finished" in shown()[0]["text"], timeout=20, what="the progress message to show the run finished")

    [message] = shown()
    assert len(thread_posts(stack, GENERAL, thread)) == 1  # a quiet success: no outcome message
    plan = plan_of(message)
    assert plan["title"] == "tidy-books"
    assert [(t["title"], t["status"]) for t in plan["tasks"]] == [
        ("Look up time", "complete"), ("Let it settle", "complete"), ("Check again", "complete")]
    assert message["text"] == "tidy-books: Finished · 3/3 steps done\n1. ✓ Look up time\n2. ✓ Let it settle\n3. ✓ Check again"
    assert_valid_blocks(message["blocks"])
    for task in plan["tasks"]:
        assert_valid_blocks([task])
    posts = [c for c in stack.slack.calls_to("chat.postMessage") if c["params"].get("thread_ts") == thread]
    updates = [c for c in stack.slack.calls_to("chat.update") if c["params"].get("ts") == message["ts"]]
    assert len(posts) == 1 and len(updates) >= 1, (posts, updates)
    # paced and coalesced: far fewer updates than step changes (3 steps x claimed/done + the wait)
    assert len(updates) <= 4
    [finished] = activity(stack, run_id, "run.finished")
    assert finished.details["told"] is False and finished.details["status"] == "completed"


FAILING = f"""\
name: announce-close
member: nova
trigger: {{manual: {{}}}}
autonomy: auto  # about the failure's report, not approvals (applied by an admin)
steps:
  - {{id: look_up_time, tool: current_time}}
  - {{id: announce, post: {{channel: C0NOSUCH01, text: "Books are closed"}}}}
  - {{id: thank, post: {{channel: {GENERAL}, text: "Thanks all"}}}}
"""


def test_a_failed_run_tells_the_requester_why_once_in_the_thread_it_came_from(stack: Stack) -> None:
    stack.up()
    apply(stack, FAILING)
    thread = stack.slack.add_message(NOVA_DM, ANA, "Announce that the books are closed")
    run_id = start_from_chat(stack, "announce-close", NOVA_DM, thread)
    wait_status(stack, run_id, "failed")

    def told() -> list[Json]:
        return [m for m in thread_posts(stack, NOVA_DM, thread) if effect_of(m) == f"outcome-{run_id}"]

    wait_until(told, timeout=20, what="the outcome in the thread")
    ask_again(stack, run_id)  # the finishing code running twice
    time.sleep(3)
    [outcome] = told()
    assert outcome["text"] == ("announce-close failed: step 'announce' failed: "
                               "step 'announce': could not post to C0NOSUCH01: channel_not_found.")
    [final] = [m for m in thread_posts(stack, NOVA_DM, thread) if effect_of(m) == f"progress-{run_id}"]
    assert final["text"].startswith("announce-close: Failed: step 'announce' failed")
    assert [(t["task_id"], t["status"]) for t in plan_of(final)["tasks"]] == [
        ("look_up_time", "complete"), ("announce", "error"), ("thank", "pending")]
    assert not [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL]
    [finished] = activity(stack, run_id, "run.finished")
    assert finished.description == outcome["text"] and finished.details["told"] is True


# A channel shared with clients: outside the team (#general is the team's feed, where posts are
# not news). These workflows are `auto` (applied by an admin): they are about what is told.
CLIENTS = "C0CLIENTS1"

REVIEWED = f"""\
name: client-update
member: nova
trigger: {{manual: {{}}}}
autonomy: auto
steps:
  - {{id: announce, post: {{channel: {CLIENTS}, text: "New prices from March"}}}}
  - id: review
    approval: {{message: "Email the clients about the new prices?", approvers: [ana]}}
  - {{id: email_clients, post: {{channel: {CLIENTS}, text: "Clients emailed"}}}}
"""


def test_a_run_that_posted_and_was_rejected_tells_what_it_did_and_who_rejected_it_and_why(stack: Stack) -> None:
    stack.slack.add_channel(CLIENTS, "clients", [ANA, NOVA["user"]])
    stack.up()
    apply(stack, REVIEWED)
    thread = stack.slack.add_message(NOVA_DM, ANA, "Tell everyone about the new prices")
    run_id = start_from_chat(stack, "client-update", NOVA_DM, thread)
    approval_id = pending_approval(stack, run_id)

    def waiting() -> bool:
        found = [m for m in thread_posts(stack, NOVA_DM, thread) if effect_of(m) == f"progress-{run_id}"]
        return bool(found) and "waiting for approval" in str(plan_of(found[0])["tasks"][1].get("details"))

    wait_until(waiting, timeout=20, what="the progress message to show the approval waiting")

    async def reject() -> bool:
        rt = runtime(stack)
        try:
            return await approvals.decide(rt, approval_id, approvals.Decision("rejected", by=ANA, reason="too formal"))
        finally:
            await rt.db.close()

    assert asyncio.run(reject())
    wait_status(stack, run_id, "completed")

    def told() -> list[Json]:
        return [m for m in thread_posts(stack, NOVA_DM, thread) if effect_of(m) == f"outcome-{run_id}"]

    wait_until(told, timeout=20, what="the outcome in the thread")
    [outcome] = told()
    assert outcome["text"] == f"client-update finished: 1 message posted, 1 rejected by <@{ANA}> (too formal)."
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == CLIENTS] == ["New prices from March"]


POSTING = f"""\
name: post-prices
member: nova
trigger: {{manual: {{}}}}
autonomy: auto
steps:
  - {{id: announce, post: {{channel: {CLIENTS}, text: "New prices from March"}}}}
  - {{id: feed, post: {{channel: {GENERAL}, text: "Prices posted for the clients"}}}}
"""
QUIET = "name: quiet\nmember: nova\ntrigger: {manual: {}}\nsteps: [{id: now, tool: current_time}]\n"


def test_a_run_from_the_cli_as_ana_tells_her_by_dm_only_when_it_did_something(stack: Stack) -> None:
    stack.slack.add_channel(CLIENTS, "clients", [ANA, NOVA["user"]])
    stack.up()
    apply(stack, POSTING, "posting.yml")
    apply(stack, QUIET, "quiet.yml")
    quiet = stack.cli("workflow", "run", "quiet", "--as", "ana")
    assert quiet.returncode == 0, quiet.stderr
    quiet_run = quiet.stdout.strip()
    wait_status(stack, quiet_run, "completed")
    wait_until(lambda: activity(stack, quiet_run, "run.finished"), timeout=20, what="the quiet run's run.finished row")

    posting = stack.cli("workflow", "run", "post-prices", "--as", "ana")
    assert posting.returncode == 0, posting.stderr
    run_id = posting.stdout.strip()
    wait_status(stack, run_id, "completed")

    def dms() -> list[Json]:
        return [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM]

    wait_until(dms, timeout=20, what="the outcome in Ana's DM")
    ask_again(stack, run_id)
    time.sleep(3)
    assert [(p["text"], effect_of(p)) for p in dms()] == [("post-prices finished: 1 message posted.", f"outcome-{run_id}")]
    assert not stack.slack.calls_to("chat.update")  # no conversation: no progress message anywhere
    assert [r.details["told"] for r in activity(stack, quiet_run, "run.finished")] == [False]


# ---------------------------------------------------------------------------- what is shown and told


REMINDERS = {
    "name": "payment-reminders", "member": "nova", "trigger": {"manual": {}},
    "steps": [
        {"id": "find", "tool": "current_time"},
        {"id": "remind", "foreach": "{{ steps.find.output }}", "steps": [
            {"id": "check", "approval": {"message": "Send it?", "approvers": ["ana"]}},
            {"id": "send", "tool": "send_test_reminder", "on_error": "skip"},
        ]},
        {"id": "report", "post": {"channel": GENERAL, "text": "done"}},
    ],
}


class _ReminderInput(BaseModel):
    pass


async def _send_reminder(_ctx: Any, _args: _ReminderInput) -> str:
    return "sent"


register("send_test_reminder", "An effect tool for these tests.", _ReminderInput, effect=True)(_send_reminder)


def row(path: str, status: str, output: Any = None, error: str | None = None, approval: str | None = None) -> StepRun:
    return StepRun(run_id="r1", step_path=path, status=status, output=output, error=error,
                   input={"approval_id": approval} if approval else None)


def rows_of(*rows: StepRun) -> dict[str, StepRun]:
    return {r.step_path: r for r in rows}


def test_a_foreach_shows_how_many_items_are_done_and_an_approval_waiting() -> None:
    definition = WorkflowDefinition.model_validate(REMINDERS)
    rows = rows_of(row("find", "done", [1, 2, 3, 4, 5]), row("remind", "running", {"items": [1, 2, 3, 4, 5]}),
                   *(row(f"remind[{i}]/check", "done", {"decision": "approved"}) for i in range(3)),
                   *(row(f"remind[{i}]/send", "done", "sent") for i in range(3)),
                   row("remind[3]/check", "waiting", approval="ap-1"))
    run = WorkflowRun(id="r1", status="waiting", error=None)
    card = progress_card(definition, run, rows)
    assert [(t.title, t.status, t.details) for t in card.tasks] == [
        ("Find", "complete", ""), ("Remind", "in_progress", "3/5 done, 1 waiting for approval"), ("Report", "pending", "")]
    assert card.text == ("payment-reminders: Waiting · 1/3 steps done\n1. ✓ Find\n2. ◐ Remind: 3/5 done, 1 waiting for approval\n"
                         "3. ○ Report")


def test_a_foreach_shows_its_items_held_by_the_members_daily_cap_with_the_reason() -> None:
    definition = WorkflowDefinition.model_validate(REMINDERS)
    held = "held: Nova's daily limit of 3 external actions is reached; waits until 2026-12-03 00:00 Europe/Amsterdam or an admin raises it"
    rows = rows_of(row("find", "done", [1, 2, 3, 4, 5]), row("remind", "running", {"items": [1, 2, 3, 4, 5]}),
                   *(row(f"remind[{i}]/check", "done", {"decision": "approved"}) for i in range(5)),
                   *(row(f"remind[{i}]/send", "done", "sent") for i in range(3)),
                   *(StepRun(run_id="r1", step_path=f"remind[{i}]/send", status="waiting", error=held, input={"held": "nova"})
                     for i in (3, 4)))
    card = progress_card(definition, WorkflowRun(id="r1", status="waiting", error=None), rows)
    assert card.tasks[1].details == f"3/5 done, 2 {held}"[:300]


def test_the_outcome_counts_effects_rejections_and_skips_in_plain_words() -> None:
    definition = WorkflowDefinition.model_validate(REMINDERS)
    rejected = {"decision": "rejected", "by": "ana", "reason": "too formal"}
    rows = rows_of(row("find", "done", [1, 2, 3, 4, 5]), row("remind", "done", {"items": [1, 2, 3, 4, 5]}),
                   *(row(f"remind[{i}]/send", "done", "sent") for i in range(3)),
                   row("remind[3]/check", "done", rejected), row("remind[3]/send", "skipped"),
                   row("remind[4]/send", "skipped", error="no email address"),
                   row("report", "done", {"channel": GENERAL, "ts": "1.1"}))
    origin = Origin(via="chat", platform="slack", conversation=NOVA_DM, thread="1.0", person="ana")
    agent_effects = [("post", {"channel": NOVA_DM}), ("email", {}), ("email", {})]
    people = People(accounts={"ana": {"slack": ANA}})
    outcome = summarize(definition, WorkflowRun(id="r1", status="completed"), rows, agent_effects, origin,
                        lambda who: f"<@{people.user_id(who)}>", people)
    assert outcome.worth_telling
    assert outcome.sentence() == ("payment-reminders finished: 1 message posted, 2 emails sent, 3 test reminders sent, "
                                  f"1 rejected by <@{ANA}> (too formal), 1 skipped (Send: no email address).")
    quiet = summarize(definition, WorkflowRun(id="r2", status="completed"), rows_of(row("find", "done", [])), [], origin,
                      lambda who: who, people)
    assert not quiet.worth_telling
    cancelled = WorkflowRun(id="r3", status="cancelled", error="cancelled by ana")
    assert not summarize(definition, cancelled, {}, [], origin, lambda who: who, people).worth_telling  # she did it herself
    by_admin = WorkflowRun(id="r4", status="cancelled", error="cancelled by U0BOB00001")
    assert summarize(definition, by_admin, {}, [], origin, lambda who: who, people).sentence() == \
        "payment-reminders was cancelled: cancelled by U0BOB00001."


def test_where_slack_refuses_the_native_plan_the_numbered_list_lands_instead(slack: FakeSlack) -> None:
    from bot.slack.channel import SlackChannel, web_client

    channel = SlackChannel(web_client(NOVA["token"], slack.base_url))
    card = Card(text="tidy-books: Running", title="tidy-books", tasks=(Task("a", "Look up time", "complete"), Task("b", "Wait")))
    slack.fail_next("chat.postMessage", error="invalid_blocks")
    ref = asyncio.run(channel.send_card(MessageRef(GENERAL), card))
    [message] = [m for m in slack.messages(GENERAL) if m["ts"] == ref.message]
    assert [b["type"] for b in message["blocks"]] == ["section", "section"]
    assert message["blocks"][1]["text"]["text"] == "1. ✓ Look up time\n2. ○ Wait"
    asyncio.run(channel.update(ref, card))  # where it is accepted, the plan
    [message] = [m for m in slack.messages(GENERAL) if m["ts"] == ref.message]
    assert [b["type"] for b in message["blocks"]] == ["plan"]
