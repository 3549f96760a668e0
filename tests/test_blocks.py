"""Every Block Kit message and modal the Slack adapter renders survives slack_sdk's own models
unchanged: a dropped key, an unknown block or a limit Slack enforces fails here, not in Slack."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from agents.messages import (
    APPROVE_ACTION,
    APPROVE_ALL_ACTION,
    EDIT_ACTION,
    REJECT_ACTION,
    RETRY_TURN_ACTION,
    VIEW_ACTION,
    Button,
    Card,
    Field,
    Form,
    FormInput,
    MessageRef,
    Task,
)
from bot.slack.actions import form_metadata, from_submission
from bot.slack.blocks import buttons_blocks, card_blocks, form_view


def valid(blocks: list[dict[str, Any]]) -> None:
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block
        for task in block.get("tasks") or []:  # a plan's task cards are kept as dicts by its model
            valid([task])


LONG = "Dear Acme,\n" + "we kindly remind you of invoice 2024-015. " * 200
CARDS = {
    "pending": Card(text="Approval needed: Send?", title="Send the reminder to Acme?",
                    fields=(Field("Workflow", "payment-reminders"), Field("Approvers", "<@U0ANA00001>")), body="Dear Acme, ...",
                    status="Waiting for <@U0ANA00001> or an admin",
                    buttons=(Button(APPROVE_ACTION, "Approve", "ap-1", "primary"), Button(REJECT_ACTION, "Reject", "ap-1", "danger"),
                             Button(EDIT_ACTION, "Edit", "ap-1")), more=Button(VIEW_ACTION, "View draft", "ap-1")),
    "long draft": Card(text="Approval needed", title="t" * 4000, body=LONG, more=Button(VIEW_ACTION, "View draft", "ap-1"),
                       buttons=(Button(APPROVE_ACTION, "Approve", "ap-1", "primary"),)),
    "decided": Card(text="Approval approved", title="Send?", body="Dear Acme", status="✅ Approved by <@U0ANA00001> at 14:02"),
    "group": Card(text="12 approvals", title="12 approvals for payment-reminders", status="Each request is in this thread",
                  buttons=(Button(APPROVE_ALL_ACTION, "Approve all 12", "run|remind", "primary"),)),
    "bare": Card(text="just text"),
    "plan": Card(text="Plan: payment reminders", title="Payment reminders, weekdays at 09:00 (Amsterdam time)",
                 tasks=(Task("find", "Find overdue invoices"), Task("draft", "Draft one reminder per invoice", details="friendly, then formal"),
                        Task("approve", "Ana approves each reminder"), Task("send", "Send the approved ones")),
                 fields=(Field("Autonomy", "approve"),), body="Friendly first, then formal, then urgent.",
                 status="Only Ana or an admin can start it",
                 buttons=(Button("plan.start", "Start", "p-1", "primary"), Button("plan.change", "Change", "p-1"),
                          Button("plan.cancel", "Cancel", "p-1", "danger"))),
    "progress": Card(text="payment-reminders: 2 of 3 steps done", title="payment-reminders",
                     tasks=(Task("find", "Find overdue invoices", "complete", output="5 invoices"),
                            Task("remind", "Remind each client", "in_progress", details="3/5 done"),
                            Task("report", "Report", "error", details="timed out after 30s"))),
    "many tasks": Card(text="big", tasks=tuple(Task(f"s{i % 7}", f"step {i}", "complete") for i in range(80))),
}


def test_a_card_with_tasks_is_a_native_plan_in_place_of_its_title_with_fields_status_and_buttons_after_it() -> None:
    blocks = card_blocks(CARDS["plan"])
    assert [b["type"] for b in blocks] == ["plan", "section", "section", "context", "actions"]
    plan = blocks[0]
    assert plan["title"] == CARDS["plan"].title
    assert [(t["task_id"], t["title"], t["status"]) for t in plan["tasks"]] == [
        ("find", "Find overdue invoices", "pending"), ("draft", "Draft one reminder per invoice", "pending"),
        ("approve", "Ana approves each reminder", "pending"), ("send", "Send the approved ones", "pending")]
    assert plan["tasks"][1]["details"]["elements"][0]["elements"][0]["text"] == "friendly, then formal"
    assert [e["text"]["text"] for e in blocks[4]["elements"]] == ["Start", "Change", "Cancel"]


def test_a_plan_holds_at_most_fifty_task_cards_with_unique_ids() -> None:
    [plan] = card_blocks(CARDS["many tasks"])
    ids = [t["task_id"] for t in plan["tasks"]]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert plan["tasks"][-1]["title"] == "31 more steps"


def test_without_native_blocks_tasks_are_a_numbered_list_with_status_marks() -> None:
    blocks = card_blocks(CARDS["progress"], native_tasks=False)
    valid(blocks)
    assert [b["type"] for b in blocks] == ["section", "section"]
    assert blocks[0]["text"]["text"] == "*payment-reminders*"
    assert blocks[1]["text"]["text"] == ("1. ✓ Find overdue invoices: 5 invoices\n2. ◐ Remind each client: 3/5 done\n"
                                         "3. ✗ Report: timed out after 30s")


def test_the_terminal_prints_tasks_as_a_numbered_list_and_prints_an_updated_plan_again() -> None:
    import asyncio
    import io

    from teammates.chat import TerminalChannel

    out = io.StringIO()
    terminal = TerminalChannel("Nova", out)
    asyncio.run(terminal.send_card(MessageRef("t"), CARDS["plan"]))
    asyncio.run(terminal.update(MessageRef("t", "1"), CARDS["progress"]))
    printed = out.getvalue()
    assert ("Nova: Payment reminders, weekdays at 09:00 (Amsterdam time)\n1. ○ Find overdue invoices\n"
            "2. ○ Draft one reminder per invoice: friendly, then formal\n3. ○ Ana approves each reminder\n"
            "4. ○ Send the approved ones\nAutonomy: approve\nFriendly first, then formal, then urgent.\nOnly Ana or an admin can start it\n(Start / Change / Cancel") in printed
    assert "Nova: payment-reminders\n1. ✓ Find overdue invoices: 5 invoices\n2. ◐ Remind each client: 3/5 done\n" in printed


@pytest.mark.parametrize("name", list(CARDS))
def test_cards_are_valid_block_kit(name: str) -> None:
    blocks = card_blocks(CARDS[name])
    valid(blocks)
    if name == "long draft":  # collapsed, with the button that shows the whole draft
        text = str(blocks)
        assert "View draft" in text and len(text) < 8000


def test_the_try_again_message_is_valid_block_kit() -> None:
    valid(buttons_blocks("Sorry, I can't reach my brain right now.", [Button(RETRY_TURN_ACTION, "Try again", "42", "primary")]))


@pytest.mark.parametrize("form", [
    Form(title="Reject", object_id="ap-1", submit_action="approval.rejected", submit_label="Reject", text="*Send?*",
         inputs=(FormInput("reason", "Why?", optional=True, max_length=500),)),
    Form(title="Edit and approve", object_id="ap-1", submit_action="approval.edited", submit_label="Approve", text="*Send?*",
         inputs=(FormInput("content", "Draft", initial=LONG, max_length=3000),)),
    Form(title="Draft", object_id="ap-1", text=LONG),
])
def test_forms_are_valid_modals_and_their_submission_comes_back_as_an_action(form: Form) -> None:
    view = form_view(form, form_metadata(form, MessageRef("C0GENERAL1", "1.000001", "1.000000")))
    model = View(**view)
    model.validate_json()
    assert model.to_dict() == view
    values = {i.id: "typed" for i in form.inputs}
    state = {k: {k: {"type": "plain_text_input", "value": v}} for k, v in values.items()}
    body = {"type": "view_submission", "user": {"id": "U0ANA00001"}, "view": {**view, "id": "V01", "state": {"values": state}}}
    if form.submit_action:
        action = from_submission("nova", body)
        assert action is not None
        assert (action.action, action.object_id, action.values) == (form.submit_action, "ap-1", values)
        assert action.where == MessageRef("C0GENERAL1", None, "1.000000")


def test_a_page_of_many_cards_stays_within_slacks_block_limits_and_says_what_it_left_out() -> None:
    from agents.messages import Page
    from bot.slack.blocks import HOME_BLOCKS, MESSAGE_BLOCKS, home_view, page_blocks

    cards = tuple(Card(text=f"wf-{i}", title=f"wf-{i}", fields=(Field("Status", "active"), Field("Next run", "09:00")),
                       buttons=(Button("workflow.pause", "Pause", f"wf-{i}"), Button("workflow.run", "Run now", f"wf-{i}")))
                  for i in range(40))
    page = Page(text="*Nova's workflows*", cards=cards, note="`/nova help` lists every command.")
    blocks = page_blocks(page)
    assert len(blocks) <= MESSAGE_BLOCKS
    valid(blocks)
    shown = sum(1 for b in blocks if b["type"] == "actions")
    assert blocks[-1]["type"] == "context" and blocks[-1]["elements"][0]["text"].startswith(f"{40 - shown} more not shown.")

    view = home_view(page)
    assert len(view["blocks"]) <= HOME_BLOCKS and view["type"] == "home"
    model = View(**view)
    model.validate_json()
    assert model.to_dict() == view
    valid(view["blocks"])
    assert page_blocks(Page(text="")) and valid(page_blocks(Page(text=""))) is None
