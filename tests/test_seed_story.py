"""The seed's story, end to end: Ana asks Nova in a DM to remind clients about overdue
invoices; Nova asks what it needs, posts a plan, Ana starts it; at the scheduled time the run
finds the overdue invoices in the shipped invoicing API, drafts one reminder per invoice in a
tone that follows the reminders sent so far, asks Ana in the DM, sends only what she approved
(one email each, over SMTP), tells her how it went, and queues the next check; her reason for a
rejection shapes the next draft.

Real parts: `teammates serve` and workers, Redis, the Slack and Anthropic fakes over HTTP, the
example business API (`examples.business_api`) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis as redis_lib
import yaml
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import text

from examples.business_api import BusinessApiServer
from jobs import queues
from storage.db import Database
from tests.conftest import ANA, CONFIG, NOVA, NOVA_DM, ROOT, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.fakes.smtp_server import SmtpSink
from tests.test_approvals import assert_valid_blocks
from tests.test_builder import click, plan_cards, workflows

Json = dict[str, Any]

QUESTIONS = "Happy to! Three questions: after how many days overdue? What tone? And shall I show you each reminder before it goes out?"
ANSWERS = "After 7 days. Friendly the first time, firmer after that. And yes, show me each one first."
PLAN_SAID = "Here is the plan. Press Start (or say yes) and I'll check every weekday at 09:00."


@pytest.fixture
def api(smtp: SmtpSink) -> Iterator[BusinessApiServer]:
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port) as server:
        yield server


def with_invoicing(stack: Stack, api_url: str) -> None:
    """The test config plus Nova's invoicing tools, as `teammates.example.yml` ships them."""
    config = yaml.safe_load(CONFIG)
    shipped = yaml.safe_load((ROOT / "teammates.example.yml").read_text())
    config["tools"] = [t for t in shipped["tools"] if t["name"] in ("get_overdue_invoices", "get_invoice", "send_payment_reminder")]
    nova = next(m for m in config["members"] if m["id"] == "nova")
    nova["tools"] = [*nova["tools"], "get_overdue_invoices", "get_invoice", "send_payment_reminder"]
    (stack.workdir / "teammates.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    stack.env["INVOICING_URL"] = api_url


def the_draft() -> Json:
    """What the model drafts: the shipped example (its own time zone left out, as a person's
    words would not carry one)."""
    definition = yaml.safe_load((ROOT / "examples/workflows/payment-reminders.yml").read_text())
    definition["trigger"].pop("timezone", None)
    return dict(definition)


def last_user_text(body: Json) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text") or b.get("content") or "") for b in content)


def nova(body: Json) -> Reply:
    """The model's side of the story, chosen by what it is asked (drafts run concurrently)."""
    asked = last_user_text(body)
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return Reply(text=PLAN_SAID)
    if "remind clients about overdue invoices" in asked:
        return Reply(text=QUESTIONS)
    if "After 7 days" in asked:
        return Reply(tool_uses=[{"name": "create_workflow", "input": {"definition": the_draft()}}])
    if "payment reminder" in asked:
        client = re.search(r"email to (.+?)\. Tone", asked)
        tone = re.search(r"Tone: (\w+)", asked)
        warmer = " (warmer this time)" if "Too stiff" in json.dumps(body) else ""
        return Reply(text=f"Dear {client.group(1) if client else '?'}, a {tone.group(1) if tone else '?'} reminder{warmer}. — Nova, Acme BV")
    return Reply(text="Noted.")


def nova_posts(stack: Stack) -> list[Json]:
    return stack.slack.posts_by(NOVA["token"])


def requests_for(stack: Stack) -> list[Json]:
    return [p for p in nova_posts(stack) if "approval.approve\"" in json.dumps(p.get("blocks") or [])
            and "approval.approve_all" not in json.dumps(p.get("blocks") or [])]


def arrive(stack: Stack) -> tuple[str, int]:
    """Controlled time: the queued slot of the schedule falls due now (RQ's scheduled job is
    moved to its queue, as RQ's scheduler would at that time). Its job id and slot."""
    connection = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    queue = Queue(queues.WORKFLOWS, connection=connection)
    registry = ScheduledJobRegistry(queue=queue)
    [job_id] = wait_until(lambda: [j for j in registry.get_job_ids() if j.startswith("wf-")], what="the queued slot")
    job = Job.fetch(job_id, connection=connection)
    registry.remove(job)
    queue.enqueue_job(job)
    return job_id, int(job_id.rsplit("-", 1)[1])


def activity(stack: Stack) -> list[str]:
    async def read() -> list[str]:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                rows = await session.execute(text("SELECT action, description FROM activity ORDER BY id"))
                return [f"{a}: {d}" for a, d in rows.all()]
        finally:
            await db.close()

    return asyncio.run(read())


def test_ana_asks_nova_for_payment_reminders_and_the_whole_loop_runs(stack: Stack, api: BusinessApiServer, smtp: SmtpSink) -> None:
    with_invoicing(stack, api.url)
    stack.llm.set_responder(nova)
    stack.up(workers=2)
    driver = stack.driver()

    # The conversation: a question, her answers, a plan.
    driver.dm(ANA, "Can you remind clients about overdue invoices?", channel=NOVA_DM)
    wait_until(lambda: [p for p in nova_posts(stack) if p.get("text") == QUESTIONS], what="Nova's questions")
    driver.dm(ANA, ANSWERS, channel=NOVA_DM)
    [card] = wait_until(lambda: plan_cards(stack), what="the plan")
    shown = json.dumps(card["blocks"])
    assert "At 09:00, Monday through Friday (Amsterdam time)" in shown
    assert "get_overdue_invoices" in shown and "send_payment_reminder" in shown
    assert_valid_blocks(card["blocks"])
    wait_until(lambda: [p for p in nova_posts(stack) if p.get("text") == PLAN_SAID], what="Nova's word on the plan")

    # Start: the workflow exists, active, its next check queued for 09:00 Amsterdam time.
    assert click(stack, card, "plan.start", ANA) == 200
    [flow] = wait_until(lambda: workflows(stack), what="the workflow")
    assert flow["status"] == "active"
    first_slot = datetime.fromisoformat(flow["next_run"]).astimezone(ZoneInfo("Europe/Amsterdam"))
    assert (first_slot.hour, first_slot.minute) == (9, 0)

    # 09:00: overdue invoices found, three drafts, three requests in the DM (the fourth client has no email).
    job_id, slot = arrive(stack)
    wait_until(lambda: len(requests_for(stack)) == 3, timeout=60, what="three approval requests")
    requests = {re.search(r"to (.+?) \(", r["text"] or json.dumps(r["blocks"])).group(1): r  # type: ignore[union-attr]
                for r in requests_for(stack)}
    assert set(requests) == {"Bakkerij de Vries", "Studio Lumen", "Green Leaf Catering"}
    assert all(r["channel"] == NOVA_DM for r in requests.values())
    assert "a friendly reminder" in json.dumps(requests["Green Leaf Catering"]["blocks"])  # no reminder sent before
    assert "a formal reminder" in json.dumps(requests["Studio Lumen"]["blocks"])  # one before
    assert "a urgent reminder" in json.dumps(requests["Bakkerij de Vries"]["blocks"])  # two before

    # Ana approves two and rejects one, with a reason.
    assert click(stack, requests["Green Leaf Catering"], "approval.approve", ANA) == 200
    assert click(stack, requests["Bakkerij de Vries"], "approval.approve", ANA) == 200
    assert click(stack, requests["Studio Lumen"], "approval.reject", ANA) == 200
    [modal] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the reason form")
    stack.driver().view_submission(modal, {"reason": "Too stiff, be warmer"}, user_id=ANA)

    # Exactly the approved ones are emailed, once each.
    wait_until(lambda: len(smtp.messages) == 2, timeout=30, what="two emails")
    assert sorted(m["To"] for m in smtp.messages) == ["accounts@greenleafcatering.test", "finance@bakkerijdevries.test"]
    assert all("reminder" in m.get_content() for m in smtp.messages)
    assert api.store.stats()["effects"] == 2

    # Ana hears how it went, in the DM; the feed has each step.
    told = wait_until(lambda: [p for p in nova_posts(stack) if "payment-reminders" in p.get("text", "") and "rejected" in p.get("text", "")],
                      timeout=30, what="the outcome")
    said = told[0]["text"]
    assert "2 payment reminders sent" in said and f"1 rejected by <@{ANA}> (Too stiff, be warmer)" in said
    assert "1 skipped (has email address: no)" in said
    feed = activity(stack)

    def logged(action: str, *words: str) -> int:
        return sum(1 for line in feed if line.startswith(f"{action}: ") and all(w in line for w in words))

    assert logged("plan.started", "ana started payment-reminders (version 1)") == 1
    assert logged("approval_requested", "payment-reminders: asked for approval") == 3
    assert logged("approval_approved") == 2 and logged("approval_rejected", "Studio Lumen", "Too stiff, be warmer") == 1
    assert logged("step_done", "/send done") == 2
    assert logged("run.finished", said) == 1

    # The next check is queued (the day after, 09:00 Amsterdam time).
    registry = ScheduledJobRegistry(queue=Queue(queues.WORKFLOWS, connection=redis_lib.Redis.from_url(stack.env["REDIS_URL"])))
    upcoming = wait_until(lambda: [j for j in registry.get_job_ids() if j.startswith("wf-") and j != job_id], what="the next slot")
    assert int(upcoming[0].rsplit("-", 1)[1]) > slot

    # The next check: Studio Lumen again, and the draft follows Ana's reason.
    arrive(stack)
    wait_until(lambda: [r for r in requests_for(stack) if "Studio Lumen" in json.dumps(r["blocks"]) and "warmer this time" in json.dumps(r["blocks"])],
               timeout=60, what="Studio Lumen's new draft, which heard the reason")
    # Green Leaf got its first reminder yesterday: today's is the formal one.
    wait_until(lambda: [r for r in requests_for(stack) if "Green Leaf" in json.dumps(r["blocks"]) and "a formal reminder" in json.dumps(r["blocks"])],
               timeout=30, what="a firmer tone for the client reminded once")


def test_send_payment_reminder_from_an_agent_step_of_an_approve_workflow_without_an_approval_is_stopped(
        stack: Stack, api: BusinessApiServer, smtp: SmtpSink) -> None:
    with_invoicing(stack, api.url)
    def chaser(body: Json) -> Reply:
        if "tool_result" in json.dumps(body["messages"][-1]["content"]):
            return Reply(text="I could not send it: it needs an approval first.")
        return Reply(tool_uses=[{"name": "send_payment_reminder",
                                 "input": {"number": "INV-2026-0158", "subject": "Reminder", "text": "Please pay."}}])

    stack.llm.set_responder(chaser)
    stack.up()
    (stack.workdir / "chase.yml").write_text("""
name: chase
member: nova
trigger: {manual: {}}
steps:
  - id: chase
    agent: nova
    prompt: Chase Green Leaf Catering about INV-2026-0158.
""")
    assert stack.cli("workflow", "apply", "chase.yml").returncode == 0  # approve: the member's default
    result = stack.cli("workflow", "run", "chase", "--as", "ana")
    assert result.returncode == 0, result.stderr
    stopped = wait_until(lambda: [line for line in activity(stack) if line.startswith("effect_stopped: ")], what="the stop in the feed")
    assert "send_payment_reminder" in stopped[0] and "no approval before it" in stopped[0]
    [tool_result] = wait_until(lambda: [b for r in stack.llm.requests for m in r["body"]["messages"][-1:]
                                        if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"],
                               what="the model hears why")
    assert tool_result.get("is_error") and "approval" in tool_result["content"]
    assert api.store.stats()["effects"] == 0 and smtp.messages == []
