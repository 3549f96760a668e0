"""Approvals in Slack, end to end: the request is posted as the member's own bot, people click
its buttons over signed HTTP, the core decides who may, exactly once, and every copy of the
request shows the outcome. Real web and worker processes, real Redis, the Slack fake."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from tests.conftest import ANA, BOB, GENERAL, NOVA, NOVA_DM, ROOT, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_workflows import apply, start, wait_status

Json = dict[str, Any]


def assert_valid_blocks(blocks: list[Json]) -> None:
    """Every block survives slack_sdk's own models unchanged: no dropped key, no unknown block."""
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block, (block, parsed.to_dict())


def assert_valid_view(view: Json) -> None:
    keys = ("type", "title", "submit", "close", "blocks", "private_metadata", "callback_id")
    sent = {k: view[k] for k in keys if view.get(k) not in (None, "")}
    model = View(**sent)
    model.validate_json()
    assert model.to_dict() == sent


def requests_posted(stack: Stack) -> list[Json]:
    """Nova's posts that are approval requests (they carry the Approve button), as they are now."""
    return [p for p in stack.slack.posts_by(NOVA["token"]) if p.get("text", "").startswith("Approval ")]


def button(message: Json, action_id: str) -> str:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button in {message}")


def click(stack: Stack, message: Json, action_id: str, user: str) -> int:
    status, _ = stack.driver().block_action(action_id, button(message, action_id), user_id=user,
                                           channel_id=message["channel"], message_ts=message["ts"])
    return status


def status_line(message: Json) -> str:
    return " ".join(e.get("text", "") for b in message.get("blocks") or [] if b["type"] == "context" for e in b["elements"])


def pipeline(stack: Stack, *replies: str) -> str:
    (stack.workdir / "pipeline.yml").write_text((ROOT / "examples/workflows/research-pipeline.yml").read_text())
    assert stack.cli("workflow", "apply", "pipeline.yml").returncode == 0
    stack.llm.script(*(Reply(text=r) for r in replies))
    return start(stack, "research-pipeline", "topic=CRM tools", f"channel={GENERAL}")


def test_approve_click_resumes_the_run_posts_once_and_every_copy_shows_the_approver(stack: Stack) -> None:
    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT: A wins")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    # No origin conversation, no approvals channel: a DM to the approvers (the admin, Ana).
    assert request["channel"] == NOVA_DM
    assert "REPORT: A wins" in json.dumps(request["blocks"])
    assert_valid_blocks(request["blocks"])

    assert click(stack, request, "approval.approve", ANA) == 200
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed"
    posts = [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL]
    assert [p["text"] for p in posts] == ["REPORT: A wins"]
    [updated] = wait_until(lambda: [r for r in requests_posted(stack) if "Approved by" in status_line(r)], what="the updated request")
    assert f"<@{ANA}>" in status_line(updated)
    assert "approval.approve" not in json.dumps(updated["blocks"])  # the buttons are gone
    assert_valid_blocks(updated["blocks"])


def test_a_non_approver_is_told_privately_and_nothing_changes(stack: Stack) -> None:
    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    stack.slack.add_member(NOVA_DM, BOB)  # so the notice can reach Bob where he clicked
    assert click(stack, request, "approval.approve", BOB) == 200
    notice = wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == BOB], what="a private notice to Bob")
    assert "Only" in notice[0]["text"] and "admin" in notice[0]["text"]
    assert wait_status(stack, run_id, "waiting")["status"] == "waiting"
    assert "Waiting for" in status_line(requests_posted(stack)[0])


def test_fifty_concurrent_clicks_make_one_decision_one_resume_one_post(stack: Stack) -> None:
    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    with ThreadPoolExecutor(max_workers=25) as pool:
        statuses = list(pool.map(lambda _: click(stack, request, "approval.approve", ANA), range(50)))
    assert statuses == [200] * 50
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    wait_until(lambda: len([e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == ANA]) >= 49, timeout=30,
               what="a polite notice for each extra click")
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL] == ["REPORT"]


def test_reject_with_a_reason_posts_nothing_and_the_next_draft_hears_the_reason(stack: Stack) -> None:
    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT v1")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert click(stack, request, "approval.reject", ANA) == 200
    [modal] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the reason form")
    assert_valid_view(modal)
    status, _ = stack.driver().view_submission(modal, {"reason": "too formal"}, user_id=ANA)
    assert status == 200
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed"
    review = next(s for s in run["steps"] if s["id"] == "review")
    assert review["output"]["decision"] == "rejected" and review["output"]["reason"] == "too formal"
    assert [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL] == []
    wait_until(lambda: "too formal" in status_line(requests_posted(stack)[0]), what="the request to show the rejection")

    second = start(stack, "research-pipeline", "topic=CRM tools", f"channel={GENERAL}")
    stack.llm.script(Reply(text="FACTS"), Reply(text="SUMMARY"), Reply(text="REPORT v2"))
    wait_until(lambda: len(stack.llm.requests) >= 6, what="the second run's drafting")
    assert "too formal" in json.dumps(stack.llm.requests[5]["body"]["messages"])
    assert second


def test_edit_approves_the_edited_text_and_that_is_what_is_posted(stack: Stack) -> None:
    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT draft")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert click(stack, request, "approval.edit", ANA) == 200
    [modal] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the edit form")
    assert_valid_view(modal)
    assert "REPORT draft" in json.dumps(modal["blocks"])
    stack.driver().view_submission(modal, {"content": "REPORT final, edited by Ana"}, user_id=ANA)
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL] == ["REPORT final, edited by Ana"]


def test_approve_all_on_a_12_item_foreach_sends_12_once_each_and_items_stay_decidable(stack: Stack) -> None:
    stack.up()
    items = json.dumps([f"client {i}" for i in range(12)])
    apply(stack, f"""
name: reminders
member: nova
trigger: {{manual: {{}}}}
inputs:
  - {{name: clients, type: list, default: {items}}}
steps:
  - id: remind
    foreach: "{{{{ inputs.clients }}}}"
    concurrency: 12
    steps:
      - id: approve
        approval: {{message: "Remind {{{{ item }}}}?", show: "Dear {{{{ item }}}}, a friendly reminder.", approvers: [ana], to: {GENERAL}}}
      - id: send
        post: {{channel: {GENERAL}, text: "{{{{ steps.approve.content }}}}"}}
""")
    run_id = start(stack, "reminders")
    wait_until(lambda: len(requests_posted(stack)) == 12, what="12 requests")
    [parent] = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if "approval.approve_all" in json.dumps(p.get("blocks"))],
                          what="the group's message")
    assert_valid_blocks(parent["blocks"])
    assert all(r.get("thread_ts") == parent["ts"] for r in requests_posted(stack))  # grouped under it
    # One item decided on its own first: it stays decided, Approve all takes the other 11.
    first = requests_posted(stack)[0]
    assert click(stack, {**first, "channel": GENERAL}, "approval.reject", ANA) == 200
    [modal] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the reason form")
    stack.driver().view_submission(modal, {"reason": "not this one"}, user_id=ANA)
    wait_until(lambda: "Rejected" in status_line(requests_posted(stack)[0]), what="the rejection")
    assert click(stack, {**parent, "channel": GENERAL}, "approval.approve_all", ANA) == 200
    run = wait_status(stack, run_id, "completed", "failed", timeout=60)
    assert run["status"] == "completed"
    sent = sorted(p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL and p.get("text", "").startswith("Dear"))
    assert len(sent) == 11 and len(set(sent)) == 11  # each approved item sent once; the rejected one not


def test_approvals_of_a_foreach_sent_by_dm_are_grouped_under_one_approve_all_in_the_dm(stack: Stack) -> None:
    stack.up()
    apply(stack, f"""
name: dm-reminders
member: nova
trigger: {{manual: {{}}}}
inputs:
  - {{name: clients, type: list, default: ["Acme", "Globex", "Initech"]}}
steps:
  - id: remind
    foreach: "{{{{ inputs.clients }}}}"
    concurrency: 3
    steps:
      - id: approve
        approval: {{message: "Remind {{{{ item }}}}?", show: "Dear {{{{ item }}}}", approvers: [ana], to: dm}}
      - id: send
        post: {{channel: {GENERAL}, text: "{{{{ steps.approve.content }}}}"}}
""")
    run_id = start(stack, "dm-reminders")
    wait_until(lambda: len(requests_posted(stack)) == 3, what="3 requests")
    [parent] = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if "approval.approve_all" in json.dumps(p.get("blocks"))],
                          what="the group's message")
    assert parent["channel"] == NOVA_DM
    assert all(r["channel"] == NOVA_DM and r.get("thread_ts") == parent["ts"] for r in requests_posted(stack))
    assert click(stack, parent, "approval.approve_all", ANA) == 200
    assert wait_status(stack, run_id, "completed", "failed", timeout=60)["status"] == "completed"
    assert sorted(p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL) == ["Dear Acme", "Dear Globex", "Dear Initech"]


def test_a_run_from_a_chat_thread_asks_in_that_thread_and_its_person_may_approve(stack: Stack) -> None:
    """A run whose origin is a conversation (what the builder's run from chat records): the
    request goes in the origin thread, and its default approver is the person who asked — Bob,
    no admin — while someone else in the channel is refused."""
    import asyncio

    import redis as redis_lib

    from jobs.runs.origin import Origin
    from jobs.runs.start import start_run
    from storage.db import Database

    stack.up()
    stack.slack.add_user("U0CAROL001", "carol")
    stack.slack.add_member(GENERAL, "U0CAROL001")
    apply(stack, f"""
name: announce
member: nova
trigger: {{manual: {{}}}}
steps:
  - id: ok
    approval: {{message: "Post the announcement?", show: "Office closed on Friday."}}
  - id: post
    post: {{channel: {GENERAL}, text: "{{{{ steps.ok.content }}}}"}}
""")
    thread = stack.slack.add_message(GENERAL, BOB, "can you announce the closure?")

    async def begin() -> str | None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            origin = Origin("chat", "slack", GENERAL, thread, BOB)
            return await start_run(db, redis_lib.Redis.from_url(stack.env["REDIS_URL"]), "announce", "manual", {}, origin=origin)
        finally:
            await db.close()

    run_id = asyncio.run(begin())
    assert run_id
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert request["channel"] == GENERAL and request.get("thread_ts") == thread
    assert f"<@{BOB}>" in json.dumps(request["blocks"])  # named as the approver
    assert click(stack, request, "approval.approve", "U0CAROL001") == 200
    wait_until(lambda: [e for e in stack.slack.ephemerals(GENERAL) if e["user"] == "U0CAROL001"], what="Carol's refusal")
    assert click(stack, request, "approval.approve", BOB) == 200
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL and not p.get("thread_ts")] == [
        "Office closed on Friday."]


def test_a_click_on_the_first_copy_while_the_others_are_still_being_posted_decides_once(stack: Stack) -> None:
    """Ana approves her DM copy while Bob's is still being posted: the step finishes posting,
    then finds the decision itself; the run goes on once and Bob's copy shows the outcome."""
    stack.up(workers=2)  # the click's job runs while the step's job is still posting
    apply(stack, f"""
name: two-approvers
member: nova
trigger: {{manual: {{}}}}
steps:
  - id: ok
    approval: {{message: "Send it?", show: "Hello", approvers: [ana, {BOB}], to: dm}}
  - id: send
    post: {{channel: {GENERAL}, text: "{{{{ steps.ok.content }}}}"}}
""")
    stack.slack.delay_next("chat.postMessage", 3.0)  # Ana's copy lands; the step hears so only later
    run_id = start(stack, "two-approvers")
    [first] = wait_until(lambda: requests_posted(stack), what="Ana's copy")
    assert click(stack, first, "approval.approve", ANA) == 200
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    assert [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL] == ["Hello"]
    copies = wait_until(lambda: len(requests_posted(stack)) == 2 and all("Approved by" in status_line(r) for r in requests_posted(stack))
                        and requests_posted(stack), what="both copies to show the approval")
    assert len({c["channel"] for c in copies}) == 2  # one DM each
