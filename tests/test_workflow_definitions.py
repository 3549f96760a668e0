"""A workflow author's view of the definition format: the shipped examples load, every mistake
comes back as one line that says where and what, and templates keep their types and secrets.

Fast and offline: no Redis, no database, no Slack — only the example files and the schema file.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.workflows.definition import (
    AgentStep,
    ApprovalStep,
    ConditionStep,
    DefinitionError,
    ForeachStep,
    PostStep,
    ScheduleTrigger,
    ToolStep,
    WaitStep,
    WorkflowDefinition,
    as_document,
    iter_steps,
    json_schema,
    load_definition,
)
from jobs.workflows.durations import parse_duration
from jobs.workflows.templates import (
    SecretsView,
    TemplateError,
    check_syntax,
    is_truthy,
    redact,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "workflows"
SHIPPED_PAYMENTS = (EXAMPLES / "payment-reminders.yml").read_text(encoding="utf-8")
# The interfaces document's example workflow: every key of the format in a dozen lines, the
# base that the mistakes below are edited into.
PAYMENTS = """\
name: payment-reminders                     # unique per workspace
member: nova                                # the virtual member that owns and runs it
description: Remind clients about overdue invoices
trigger:                                    # exactly one of schedule | manual | webhook | event
  schedule: "0 9 * * MON-FRI"
  timezone: Europe/Amsterdam                # IANA name; default UTC
autonomy: approve                           # notify | approve | auto
inputs:
  - {name: days_overdue, type: integer, default: 7}
steps:
  - id: find
    tool: get_overdue_invoices
    args: {min_days: "{{ inputs.days_overdue }}"}
  - id: remind
    foreach: "{{ steps.find.output }}"      # fan-out, one child per item, as `item`
    concurrency: 5
    steps:
      - id: draft
        agent: nova                          # an LLM step by this member, with its tools
        prompt: "Draft a {{ 'friendly' if item.days < 14 else 'formal' }} reminder for {{ item.client }}"
        retry: {max: 2, backoff: 10s}
        timeout: 60s
      - id: approve
        approval: {message: "Send this reminder to {{ item.client }}?", show: "{{ steps.draft.output }}", approvers: [U0OWNER], timeout: 7d, on_timeout: skip}
      - id: send
        when: "{{ steps.approve.approved }}"
        post: {channel: "{{ item.slack_channel }}", text: "{{ steps.approve.content }}"}
  - id: pause
    wait: 3d
"""


def rejected(text: str) -> str:
    """The one-line message a user sees for `text`."""
    with pytest.raises(DefinitionError) as caught:
        load_definition(text, source="payments.yml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("payments.yml: ")
    return message


def edited(old: str, new: str) -> str:
    assert old in PAYMENTS, old
    return PAYMENTS.replace(old, new, 1)


# --- the shipped examples --------------------------------------------------------------------


def test_the_documented_example_loads_as_documented() -> None:
    workflow = load_definition(PAYMENTS, source="payment-reminders.yml")

    assert workflow.name == "payment-reminders"
    assert isinstance(workflow.trigger, ScheduleTrigger)
    assert workflow.trigger.schedule == "0 9 * * MON-FRI"
    assert workflow.trigger.overlap == "skip"
    assert workflow.trigger.catch_up_window == timedelta(hours=1)
    assert workflow.inputs[0].default == 7 and not workflow.inputs[0].required
    paths = [path for path, _ in iter_steps(workflow)]
    assert paths == ["find", "remind", "remind/draft", "remind/approve", "remind/send", "pause"]
    steps = dict(iter_steps(workflow))
    remind, draft, approve = steps["remind"], steps["remind/draft"], steps["remind/approve"]
    assert isinstance(remind, ForeachStep) and remind.concurrency == 5 and remind.as_ == "item"
    assert isinstance(draft, AgentStep) and draft.retry is not None
    assert draft.retry.delay(1) == timedelta(seconds=10)
    assert draft.retry.delay(2) == timedelta(seconds=20)
    assert draft.timeout_delta == timedelta(seconds=60)
    assert isinstance(approve, ApprovalStep)
    assert approve.approval.timeout_delta == timedelta(days=7)
    assert approve.approval.remind_after == timedelta(days=7) * 0.8
    pause = steps["pause"]
    assert isinstance(pause, WaitStep) and pause.wait_delta == timedelta(days=3)


def test_the_shipped_payment_reminders_pick_the_tone_by_reminders_sent_and_send_what_was_approved() -> None:
    workflow = load_definition(SHIPPED_PAYMENTS, source="payment-reminders.yml")

    assert isinstance(workflow.trigger, ScheduleTrigger) and workflow.autonomy == "approve"
    assert [i.name for i in workflow.inputs] == ["days_overdue"]
    steps = dict(iter_steps(workflow))
    assert list(steps) == ["find", "remind", "remind/has_email_address", "remind/has_email_address/then/draft",
                           "remind/has_email_address/then/approve", "remind/has_email_address/then/send"]
    find, check = steps["find"], steps["remind/has_email_address"]
    assert isinstance(find, ToolStep) and find.tool == "get_overdue_invoices"
    assert render(find.args, {"inputs": {"days_overdue": 10}}, step="find", key="find") == {"min_days": 10}
    assert isinstance(check, ConditionStep) and check.condition.else_ == []
    assert not is_truthy(render(check.condition.if_, {"item": {"email": None}}, step="check", key="check"))
    draft = steps["remind/has_email_address/then/draft"]
    approve = steps["remind/has_email_address/then/approve"]
    send = steps["remind/has_email_address/then/send"]
    assert isinstance(draft, AgentStep) and draft.agent == "nova" and draft.tools == []
    assert isinstance(approve, ApprovalStep) and approve.approval.approvers is None  # whoever asked
    assert approve.approval.on_timeout == "skip"
    assert isinstance(send, ToolStep) and send.tool == "send_payment_reminder"

    invoice = {"number": "INV-2026-0141", "client": "Bakkerij de Vries", "email": "finance@bakkerijdevries.test",
               "amount": 1250, "currency": "EUR", "due_date": "2026-10-25", "days": 38}
    for sent, tone in ((0, "friendly"), (1, "formal"), (2, "urgent"), (5, "urgent")):
        ctx = {"item": {**invoice, "sent": sent}, "steps": {"approve": {"approved": True, "content": "Dear ..."}}}
        prompt = render(draft.prompt, ctx, step="draft", key="draft")
        assert f"Tone: {tone}." in prompt
        assert "INV-2026-0141" in prompt and "1250.00 EUR" in prompt and "2026-10-25" in prompt and "38 days" in prompt
        assert tone in render(approve.approval.message, ctx, step="approve", key="approve")
        args = render(send.args, ctx, step="send", key="send")
        assert args["number"] == "INV-2026-0141" and args["text"] == "Dear ..." and "INV-2026-0141" in args["subject"]
        assert render(send.when, ctx, step="send", key="send") is True
    rejected = {"item": {**invoice, "sent": 0}, "steps": {"approve": {"approved": False, "content": "Dear ..."}}}
    assert render(send.when, rejected, step="send", key="send") is False


def test_research_pipeline_example_chains_outputs_and_waits_for_review() -> None:
    text = (EXAMPLES / "research-pipeline.yml").read_text(encoding="utf-8")
    workflow = load_definition(text, source="research-pipeline.yml")

    assert workflow.trigger.kind == "manual"
    assert [i.name for i in workflow.inputs if i.required] == ["topic", "channel"]
    steps = dict(iter_steps(workflow))
    assert list(steps) == ["research", "summarize", "draft", "review", "publish"]
    summarize, draft = steps["summarize"], steps["draft"]
    assert isinstance(summarize, AgentStep) and "{{ steps.research.output }}" in summarize.prompt
    assert isinstance(draft, AgentStep) and "{{ steps.summarize.output }}" in draft.prompt
    assert isinstance(steps["review"], ApprovalStep)
    publish = steps["publish"]
    assert isinstance(publish, PostStep) and publish.when == "{{ steps.review.approved }}"


def test_a_stored_definition_loads_back_unchanged() -> None:
    workflow = load_definition(PAYMENTS)
    stored = json.dumps(as_document(workflow))
    assert load_definition(stored) == workflow
    full = workflow.model_dump(mode="json", by_alias=True)
    assert WorkflowDefinition.model_validate(full) == workflow


def test_json_is_accepted_as_well_as_yaml() -> None:
    document = {
        "name": "hook",
        "member": "nova",
        "trigger": {"webhook": {"secret": "${HOOK_SECRET}"}},
        "steps": [{"id": "hold", "until": "2026-01-05T09:00:00+01:00"}],
    }
    workflow = load_definition(json.dumps(document), source="hook.json")
    assert workflow.trigger.kind == "webhook"


def test_every_path_names_nested_branches() -> None:
    text = """
name: branches
member: nova
trigger: {manual: {}}
steps:
  - id: check
    condition:
      if: "{{ inputs.urgent }}"
      then: [{id: page, post: {channel: C1, text: now}}]
      else: [{id: later, wait: 1h}]
  - id: fan
    parallel:
      - [{id: left, tool: lookup_user}]
      - [{id: right, tool: lookup_user}]
"""
    paths = [path for path, _ in iter_steps(load_definition(text))]
    assert paths == ["check", "check/then/page", "check/else/later", "fan", "fan/0/left", "fan/1/right"]


# --- mistakes, each one line naming where and what -------------------------------------------


def test_unknown_key_in_a_nested_step_names_the_step_path_and_the_key() -> None:
    message = rejected(edited("timeout: 60s", "timeout: 60s\n        promt: hello"))
    assert "steps[remind].steps[draft].promt: unknown key" in message
    assert "did you mean 'prompt'" in message


def test_bad_value_inside_a_nested_step_names_the_full_path() -> None:
    message = rejected(edited("max: 2", "max: -1"))
    assert "steps[remind].steps[draft].retry.max: expected at least 0 (found -1)" in message


def test_a_step_with_two_kinds_is_refused_by_id() -> None:
    message = rejected(edited("    wait: 3d", "    wait: 3d\n    tool: lookup_user"))
    assert "steps[pause]: found 'tool' and 'wait'" in message


def test_a_step_without_a_kind_is_refused_by_id() -> None:
    message = rejected(edited("    wait: 3d", "    timeout: 3d"))
    assert "steps[pause]: no step kind" in message


def test_duplicate_step_ids_are_refused_by_name() -> None:
    message = rejected(edited("id: send", "id: find"))
    assert "'find' is used twice" in message
    assert "steps[remind].steps[find].id" in message


def test_bad_cron_is_refused() -> None:
    message = rejected(edited("0 9 * * MON-FRI", "0 9 * * FUNDAY"))
    assert "trigger.schedule: expected a cron expression" in message


def test_bad_timezone_is_refused() -> None:
    message = rejected(edited("Europe/Amsterdam", "Mars/Olympus_Mons"))
    assert "trigger.timezone: expected an IANA time zone" in message


def test_bad_duration_is_refused() -> None:
    message = rejected(edited("wait: 3d", "wait: 3 days"))
    assert "steps[pause].wait: expected a duration" in message
    assert "never" in rejected(edited("wait: 3d", "wait: never"))


def test_two_triggers_are_refused() -> None:
    message = rejected(edited("  timezone: Europe/Amsterdam", "  manual: {}"))
    assert "trigger: found 'schedule' and 'manual'" in message


def test_template_syntax_error_names_the_step_and_key() -> None:
    message = rejected(edited("{{ item.client }}\"\n", "{{ item.client }\"\n"))
    assert "steps[remind].steps[draft].prompt: template syntax error" in message


def test_a_condition_must_be_one_expression_not_text() -> None:
    message = rejected(edited('when: "{{ steps.approve.approved }}"', "when: steps.approve.approved"))
    assert "steps[remind].steps[send].when: expected exactly one template expression" in message


def test_not_yaml_at_all_says_where() -> None:
    assert "line" in rejected("name: [unclosed\nmember: nova\n")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("90", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_durations_read_as_written(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_never_is_a_duration_only_where_allowed() -> None:
    assert parse_duration("never", allow_never=True) is None
    with pytest.raises(ValueError, match="not allowed"):
        parse_duration("never")
    with pytest.raises(ValueError, match="a duration such as"):
        parse_duration("soon")


# --- templates -------------------------------------------------------------------------------

CONTEXT: dict[str, Any] = {"steps": {"find": {"output": [{"client": "Acme", "days": 20}]}}, "x": 3}


def rendered(value: object) -> object:
    return render(value, CONTEXT, step="draft", key="prompt")


def test_types_survive_a_whole_expression() -> None:
    assert rendered("{{ steps.find.output }}") == [{"client": "Acme", "days": 20}]
    assert rendered("{{ 3 }}") == 3
    assert rendered("  {{ x > 2 }} ") is True
    assert rendered("n={{ 3 }}") == "n=3"
    assert rendered({"args": ["{{ x }}", "x is {{ x }}"]}) == {"args": [3, "x is 3"]}


def test_unknown_variable_names_the_step_and_the_dotted_variable() -> None:
    with pytest.raises(TemplateError) as caught:
        rendered("Remind {{ steps.find.outptu }}")
    assert str(caught.value) == "step 'draft': prompt: unknown variable 'steps.find.outptu'"
    assert caught.value.variable == "steps.find.outptu"


def test_the_sandbox_blocks_python_internals() -> None:
    with pytest.raises(TemplateError, match="not allowed"):
        rendered("{{ ''.__class__.__mro__ }}")
    with pytest.raises(TemplateError, match="not allowed"):
        rendered("{{ steps.find.output.append(1) }}")
    assert CONTEXT["steps"]["find"]["output"] == [{"client": "Acme", "days": 20}]


def test_check_syntax_explains_or_returns_none() -> None:
    assert check_syntax("Hello {{ name }}") is None
    assert check_syntax("Hello {{ name }") is not None


def test_truthiness_reads_words_as_a_person_would() -> None:
    assert is_truthy(True) and is_truthy("yes") and is_truthy([1])
    falsy: list[Any] = [False, "false", "No", "0", "", None, 0, []]
    assert not any(is_truthy(value) for value in falsy)


def test_secrets_are_recorded_when_read_and_redacted_from_text() -> None:
    secrets = SecretsView({"STRIPE_KEY": "sk_live_123", "UNUSED": "other"})
    header = render("Bearer {{ secrets.STRIPE_KEY }}", {"secrets": secrets}, step="pay", key="args.auth")

    assert header == "Bearer sk_live_123"
    assert secrets.used == {"STRIPE_KEY"}
    assert "sk_live_123" not in repr(secrets)
    log_line = f"calling with {header}"
    assert redact(log_line, secrets.used_values()) == "calling with Bearer [secret]"


# --- the published schema --------------------------------------------------------------------


def test_published_schema_is_current() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    published = json.loads((ROOT / "docs" / "workflow.schema.json").read_text(encoding="utf-8"))
    assert published == schema, "run: python -m jobs.workflows.definition > docs/workflow.schema.json"


def test_foreach_concurrency_is_capped() -> None:
    assert rejected(edited("concurrency: 5", "concurrency: 1000")) == (
        "payments.yml: steps[remind].concurrency: expected at most 50 (found 1000)"
    )
