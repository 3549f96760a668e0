"""The member builds a workflow from the conversation: it drafts with its workflow tools, the
core checks the draft and posts it as a plan, and only the person who asked (or an admin)
starts it. End to end: signed Slack HTTP into `teammates serve`, real workers and Redis, the
Slack and Anthropic fakes (the scripted model calls the tools)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis as redis_lib

from jobs.builder.expiry import expire_due
from storage.db import Database
from tests.conftest import ANA, BOB, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_approvals import assert_valid_blocks, button, status_line

Json = dict[str, Any]

DRAFT: Json = {
    "name": "payment-reminders",
    "description": "Remind clients about overdue invoices",
    "trigger": {"schedule": "0 9 * * MON-FRI", "timezone": "America/New_York"},
    "steps": [
        {"id": "now", "tool": "current_time"},
        {"id": "approve", "approval": {"message": "Send the reminders?", "show": "{{ steps.now.output }}"}},
    ],
}


def create(definition: Json, answer: str = "Here is the plan: press Start when it looks right.") -> list[Reply]:
    return [Reply(tool_uses=[{"name": "create_workflow", "input": {"definition": definition}}]), Reply(text=answer)]


def plan_cards(stack: Stack) -> list[Json]:
    """Nova's plan cards, as they are now (updates applied)."""
    return [p for p in stack.slack.posts_by(NOVA["token"]) if "plan.start" in json.dumps(p.get("blocks") or [])
            or str(p.get("text", "")).startswith("Plan:")]


def click(stack: Stack, card: Json, action_id: str, user: str) -> int:
    status, _ = stack.driver().block_action(action_id, button(card, action_id), user_id=user, channel_id=card["channel"],
                                           message_ts=card["ts"])
    return status


def workflows(stack: Stack) -> list[Json]:
    result = stack.cli("workflow", "list", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def ask_for_a_plan(stack: Stack, definition: Json = DRAFT) -> Json:
    stack.llm.script(*create(definition))
    stack.driver().dm(ANA, "Can you remind clients about overdue invoices every weekday morning?", channel=NOVA_DM)
    [card] = wait_until(lambda: plan_cards(stack), what="the plan card")
    return card


def test_a_plan_is_posted_with_start_change_cancel_in_the_persons_time_zone_and_start_schedules_it(stack: Stack) -> None:
    stack.slack.add_user(ANA, "ana", real_name="Ana de Vries", email="ana@acme.test", tz="Asia/Tokyo")
    stack.up()
    card = ask_for_a_plan(stack)
    assert card["channel"] == NOVA_DM
    blocks = json.dumps(card["blocks"])
    for action in ("plan.start", "plan.change", "plan.cancel"):
        assert action in blocks
    assert "At 09:00, Monday through Friday (Tokyo time)" in blocks  # Ana's profile, not the model's zone
    assert "not America/New_York" in blocks  # and the plan says so
    assert "Send the reminders?" in blocks  # who approves what
    assert_valid_blocks(card["blocks"])
    assert workflows(stack) == []  # nothing exists before Start
    # The model read the outcome: a plan, waiting for Start.
    tool_result = json.dumps(stack.llm.wait_for_requests(2)[1]["body"]["messages"][-1])
    assert "proposed" in tool_result and "Start" in tool_result

    assert click(stack, card, "plan.start", ANA) == 200
    [flow] = wait_until(lambda: workflows(stack), what="the workflow")
    assert flow["name"] == "payment-reminders" and flow["status"] == "active" and flow["version"] == 1
    next_run = datetime.fromisoformat(flow["next_run"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (next_run.hour, next_run.minute) == (9, 0) and next_run.weekday() < 5
    [started] = wait_until(lambda: [c for c in plan_cards(stack) if "Started by" in json.dumps(c["blocks"])], what="the card says started")
    assert "plan.start" not in json.dumps(started["blocks"])  # no buttons once started
    assert_valid_blocks(started["blocks"])


def test_an_incomplete_definition_comes_back_to_the_model_naming_the_missing_key(stack: Stack) -> None:
    stack.up()
    incomplete = {k: v for k, v in DRAFT.items() if k != "trigger"}
    stack.llm.script(*create(incomplete, "When should I check: every weekday at 09:00?"))
    stack.driver().dm(ANA, "Remind clients about overdue invoices", channel=NOVA_DM)
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if "every weekday" in p.get("text", "")], what="the question")
    [result] = stack.llm.wait_for_requests(2)[1]["body"]["messages"][-1]["content"]
    assert result["is_error"] is True
    assert "trigger: required but missing" in result["content"]
    assert plan_cards(stack) == [] and workflows(stack) == []


def test_yes_typed_in_the_conversation_starts_the_plan_without_asking_the_model(stack: Stack) -> None:
    stack.up()
    ask_for_a_plan(stack)
    calls = len(stack.llm.wait_for_requests(2))  # the turn that drafted the plan is over (its last call)
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text", "").startswith("Here is the plan")],
               what="Nova's word on the plan")
    stack.driver().dm(ANA, "Yes!", channel=NOVA_DM)
    [flow] = wait_until(lambda: workflows(stack), what="the workflow")
    assert flow["status"] == "active"
    [reply] = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text", "").startswith("Started")],
                         what="the reply")
    assert "payment-reminders" in reply["text"] and "Next run" in reply["text"]
    assert len(stack.llm.requests) == calls


def test_a_start_click_by_someone_else_is_refused_privately(stack: Stack) -> None:
    stack.up()
    card = ask_for_a_plan(stack)
    stack.slack.add_member(NOVA_DM, BOB)
    assert click(stack, card, "plan.start", BOB) == 200
    [notice] = wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == BOB], what="a notice to Bob")
    assert "Only" in notice["text"] and "admin" in notice["text"]
    assert workflows(stack) == []
    assert "plan.start" in json.dumps(plan_cards(stack)[0]["blocks"])  # still waiting for Ana


def test_change_reopens_the_conversation_with_the_draft_and_cancel_discards_it(stack: Stack) -> None:
    stack.up()
    card = ask_for_a_plan(stack)
    assert click(stack, card, "plan.change", ANA) == 200
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if "What would you like to change" in p.get("text", "")],
               what="the question")
    assert "asked for changes" in status_line(plan_cards(stack)[0]) or "asked for changes" in json.dumps(plan_cards(stack)[0])
    # The next turn reads the draft from the conversation and drafts again.
    changed = {**DRAFT, "trigger": {"schedule": "0 8 * * MON-FRI"}}
    stack.llm.script(*create(changed, "Changed to 08:00."))
    stack.driver().dm(ANA, "Make it 8 o'clock", channel=NOVA_DM)
    wait_until(lambda: len(plan_cards(stack)) == 2, what="a second plan")
    history = json.dumps(stack.llm.wait_for_requests(3)[2]["body"]["messages"])  # the turn after Change
    assert "0 9 * * MON-FRI" in history  # the first draft was in the conversation
    second = plan_cards(stack)[1]
    assert "At 08:00" in json.dumps(second["blocks"])

    assert click(stack, second, "plan.cancel", ANA) == 200
    wait_until(lambda: "Cancelled by" in json.dumps(plan_cards(stack)[1]), what="the card says cancelled")
    assert workflows(stack) == []


def test_a_plan_not_started_within_seven_days_expires_and_says_so(stack: Stack) -> None:
    stack.up()
    ask_for_a_plan(stack)

    async def later() -> int:
        db = Database(stack.env["DATABASE_URL"])
        try:
            soon = await expire_due(db, redis_lib.Redis.from_url(stack.env["REDIS_URL"]), now=datetime.now(UTC) + timedelta(days=6))
            late = await expire_due(db, redis_lib.Redis.from_url(stack.env["REDIS_URL"]), now=datetime.now(UTC) + timedelta(days=7, hours=1))
            return soon * 10 + late
        finally:
            await db.close()

    assert asyncio.run(later()) == 1  # not at 6 days; at 7
    wait_until(lambda: "Expired" in json.dumps(plan_cards(stack)[0]), what="the card says expired")
    card = plan_cards(stack)[0]
    assert "plan.start" not in json.dumps(card["blocks"])
    assert click(stack, {**card, "blocks": [{"type": "actions", "elements": [{"action_id": "plan.start", "value": _plan_id(stack)}]}]},
                 "plan.start", ANA) == 200
    wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == ANA], what="a notice that it expired")
    assert workflows(stack) == []


def test_a_run_started_from_chat_records_the_conversation_as_its_origin(stack: Stack) -> None:
    stack.up()
    ask_for_a_plan(stack, {**DRAFT, "trigger": {"manual": {}}, "steps": [{"id": "now", "tool": "current_time"}]})
    stack.driver().dm(ANA, "yes", channel=NOVA_DM)
    wait_until(lambda: workflows(stack), what="the workflow")
    stack.llm.script(Reply(tool_uses=[{"name": "run_workflow_now", "input": {"name": "payment-reminders"}}]), Reply(text="Running."))
    stack.driver().dm(ANA, "Run it now please", channel=NOVA_DM)

    def runs() -> list[Json]:
        result = stack.cli("runs", "--json")
        return [r for r in json.loads(result.stdout) if r["status"] == "completed"] if result.returncode == 0 else []

    [run] = wait_until(runs, what="the run")
    assert run["origin"]["via"] == "chat"
    assert run["origin"]["conversation"] == NOVA_DM
    assert run["origin"]["person"] == "ana"


def _plan_id(stack: Stack) -> str:
    return button(plan_cards(stack)[0], "plan.start") if "plan.start" in json.dumps(plan_cards(stack)[0]) else _stored_plan_id(stack)


def _stored_plan_id(stack: Stack) -> str:
    async def read() -> str:
        from sqlalchemy import text

        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return str((await session.execute(text("SELECT id FROM plans"))).scalar_one())
        finally:
            await db.close()

    return asyncio.run(read())


def test_autonomy_auto_asked_for_in_chat_by_someone_who_is_not_an_admin_is_refused(stack: Stack) -> None:
    stack.slack.add_im("D0NOVABOB1", BOB, NOVA["user"])
    stack.up()
    stack.llm.script(*create({**DRAFT, "autonomy": "auto"}, "Only an admin can let me act on my own; shall I ask first instead?"))
    stack.driver().dm(BOB, "Remind clients about overdue invoices, no need to ask me", channel="D0NOVABOB1")
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if "Only an admin" in p.get("text", "")], what="the answer")
    [result] = stack.llm.wait_for_requests(2)[1]["body"]["messages"][-1]["content"]
    assert result["is_error"] is True and "only an admin may set `auto`" in result["content"]
    assert plan_cards(stack) == [] and workflows(stack) == []


def test_its_creator_pauses_and_resumes_it_from_chat_and_someone_else_is_refused(stack: Stack) -> None:
    stack.slack.add_im("D0NOVABOB1", BOB, NOVA["user"])
    stack.up()
    ask_for_a_plan(stack)
    stack.driver().dm(ANA, "yes", channel=NOVA_DM)
    wait_until(lambda: workflows(stack), what="the workflow")

    stack.llm.script(Reply(tool_uses=[{"name": "pause_workflow", "input": {"name": "payment-reminders"}}]), Reply(text="Paused it."))
    stack.driver().dm(BOB, "Pause the payment reminders", channel="D0NOVABOB1")
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text") == "Paused it."], what="Nova's answer to Bob")
    refused = json.dumps(stack.llm.requests[-1]["body"]["messages"][-1]["content"])
    assert "is_error" in refused and "only ana (who set it up) or an admin" in refused
    assert workflows(stack)[0]["status"] == "active"

    stack.llm.script(Reply(tool_uses=[{"name": "list_my_workflows", "input": {}}, {"name": "pause_workflow", "input": {"name": "payment-reminders"}}]),
                     Reply(text="Paused."))
    stack.driver().dm(ANA, "Pause it for now", channel=NOVA_DM)
    wait_until(lambda: workflows(stack)[0]["status"] == "paused", what="paused")
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text") == "Paused."], what="Nova's answer to Ana")
    listed = json.dumps(stack.llm.requests[-1]["body"]["messages"][-1]["content"])
    assert "At 09:00, Monday through Friday" in listed and "next_run" in listed
    assert workflows(stack)[0]["next_run"] is None

    stack.llm.script(Reply(tool_uses=[{"name": "resume_workflow", "input": {"name": "payment-reminders"}}]), Reply(text="Back on."))
    stack.driver().dm(ANA, "Resume it", channel=NOVA_DM)
    wait_until(lambda: workflows(stack)[0]["status"] == "active", what="active again")


def test_update_workflow_posts_a_plan_for_a_new_version_that_start_makes_active(stack: Stack) -> None:
    stack.up()
    ask_for_a_plan(stack)
    stack.driver().dm(ANA, "yes", channel=NOVA_DM)
    wait_until(lambda: workflows(stack), what="version 1")
    changed = {**DRAFT, "trigger": {"schedule": "30 8 * * MON-FRI"}}
    stack.llm.script(Reply(tool_uses=[{"name": "update_workflow", "input": {"definition": changed}}]), Reply(text="Here is the change."))
    stack.driver().dm(ANA, "Make it half past eight", channel=NOVA_DM)
    [change] = wait_until(lambda: [c for c in plan_cards(stack) if "after version 1" in json.dumps(c["blocks"])], what="the change's plan")
    assert "At 08:30, Monday through Friday" in json.dumps(change["blocks"])
    assert workflows(stack)[0]["version"] == 1  # nothing changes before Start
    assert click(stack, change, "plan.start", ANA) == 200
    wait_until(lambda: workflows(stack)[0]["version"] == 2, what="version 2")
    next_run = datetime.fromisoformat(workflows(stack)[0]["next_run"]).astimezone(ZoneInfo("Europe/Amsterdam"))
    assert (next_run.hour, next_run.minute) == (8, 30)


def test_a_newer_plan_for_the_same_workflow_replaces_the_open_one(stack: Stack) -> None:
    stack.up()
    first = ask_for_a_plan(stack)
    stack.llm.script(*create({**DRAFT, "trigger": {"schedule": "0 10 * * MON-FRI"}}, "Here is the plan at 10:00."))
    stack.driver().dm(ANA, "Actually make it ten o'clock", channel=NOVA_DM)
    wait_until(lambda: len(plan_cards(stack)) == 2, what="the second plan")
    wait_until(lambda: "Replaced by a newer plan" in json.dumps(plan_cards(stack)[0]), what="the first card says it was replaced")
    assert "plan.start" not in json.dumps(plan_cards(stack)[0]["blocks"])
    assert click(stack, first, "plan.start", ANA) == 200  # a stale click on the old card
    [notice] = wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == ANA], what="a notice")
    assert "replaced by a newer one" in notice["text"]
    assert click(stack, plan_cards(stack)[1], "plan.start", ANA) == 200
    [flow] = wait_until(lambda: workflows(stack), what="the workflow")
    assert datetime.fromisoformat(flow["next_run"]).astimezone(ZoneInfo("Europe/Amsterdam")).hour == 10
