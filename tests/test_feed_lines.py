"""The feed's wording (no I/O): which activity rows are worth a line, and how it reads."""

from __future__ import annotations

from typing import Any

from jobs.feed.lines import Words, effect_phrase, line
from storage.feed import RunFacts
from storage.models import Activity

WORDS = Words(member_name=lambda m: {"nova": "Nova", "casey": "Casey"}.get(m, m), mention=lambda who: f"<@{who.upper()}>",
              is_effect=lambda tool: tool.startswith("send_"), tool_schema=lambda tool: {}, conversation=lambda c: f"<#{c}>")


def row(action: str, description: str = "", actor_type: str = "member", actor_id: str = "nova", **fields: Any) -> Activity:
    return Activity(id=1, workspace_id="default", member_id="nova", actor_type=actor_type, actor_id=actor_id, action=action,
                    description=description, details=fields.pop("details", {}), **fields)


def test_the_steps_in_between_reminders_and_summaries_have_no_line() -> None:
    assert line(row("step_done", "reminders: remind[0]/draft done", details={"kind": "agent"}), WORDS) is None
    assert line(row("step_done", details={"kind": "tool", "tool": "get_overdue_invoices", "about": {}}), WORDS) is None
    assert line(row("approval_reminded", "Reminded the approvers: x"), WORDS) is None
    assert line(row("run.finished", "reminders finished: 2 sent."), WORDS) is None


def test_lines_read_as_what_someone_did() -> None:
    run = RunFacts("payment-reminders", "schedule", "schedule", "ana")
    assert line(row("run_started", "Started payment-reminders (v1, schedule)", run_id="r1"), WORDS, run) == \
        "Nova started payment-reminders for <@ANA> on its schedule"
    assert line(row("approval_approved", "Approved: Send it?", "person", "U0ANA", details={"edited": True}), WORDS) == \
        "<@U0ANA> approved with edits: Send it?"
    assert line(row("approval_rejected", "Rejected: Send it? — too formal", "person", "U0BEN"), WORDS) == \
        "<@U0BEN> rejected: Send it? — too formal"
    assert line(row("run_failed", "payment-reminders failed: step 'find' failed", run_id="r1"), WORDS, run) == \
        "Nova's payment-reminders failed: step 'find' failed"
    assert line(row("handoff", "reminders: handed off to casey", entity_type="member", entity_id="casey"), WORDS, run) == \
        "Nova handed payment-reminders over to Casey"
    assert line(row("workflow_paused", "Paused reminders from chat", "person", "ana", entity_type="workflow", entity_id="reminders"),
                WORDS) == "<@ANA> paused reminders"
    assert line(row("member_paused", "ana paused Nova", "person", "ana", entity_type="member", entity_id="nova"),
                WORDS) == "<@ANA> paused Nova"
    # An action recorded elsewhere that this module has no words for still reads as who did what.
    assert line(row("budget.set", "Budget member:nova set to 200 EUR a month", "person", "ana"), WORDS) == \
        "<@ANA>: Budget member:nova set to 200 EUR a month"


def test_an_effect_says_what_was_sent_to_whom_about_what() -> None:
    schema = {"properties": {"number": {"type": "string", "description": "the invoice number"}}}
    assert effect_phrase("send_payment_reminder", {"client": "Acme Corp", "number": "2024-015"}, schema) == \
        "sent a payment reminder to Acme Corp for invoice 2024-015"
    assert effect_phrase("send_follow_up", {"name": "Globex", "lead_id": 7}, {}) == "sent a follow up to Globex for lead 7"
    assert effect_phrase("send_email", {"item": "x"}, {}) == "sent an email"
    assert effect_phrase("notify_partner", {}, {}) == "notified a partner"
    assert effect_phrase("escalate", {"number": 5}, {}) == "ran escalate for #5"
