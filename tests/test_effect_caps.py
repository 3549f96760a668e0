"""A member's cap on external effects (`members[].limits.effects_per_day`), end to end: real
`teammates` processes send email through a local SMTP server; past the cap a workflow's effect
steps are held with the reason shown in `runs --json` and run once the cap is raised, and a
conversation's effect is refused with the reason told to the model."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from storage.db import Database
from storage.models import Activity
from tests.conftest import ANA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.fakes.smtp_server import SmtpSink
from tests.test_workflows import apply, start, wait_status


def configure(stack: Stack, smtp: SmtpSink, cap: int, autonomy: str = "approve") -> None:
    """Nova may send email, at most `cap` external actions a day."""
    path = stack.workdir / "teammates.yml"
    config = path.read_text().replace(
        "    tools: [get_thread_history, lookup_user, post_message]\n",
        f"    tools: [get_thread_history, lookup_user, post_message, send_email]\n"
        f"    limits: {{effects_per_day: {cap}}}\n"
        f"    autonomy: {autonomy}\n",
    )
    path.write_text(config + f"""
email:
  smtp: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}
  from: "Nova at Acme <nova@acme.test>"
""")


OUTREACH = """
name: outreach
member: nova
trigger: {manual: {}}
autonomy: auto                # an admin applies it: the cap is what bounds it here
steps:
  - id: each
    foreach: "{{ range(60) | list }}"
    concurrency: 10
    steps:
      - id: mail
        tool: send_email
        args: {to: "client{{ item }}@example.test", subject: "Hello {{ item }}", text: "Our new catalogue is out."}
"""


def test_a_workflow_past_its_members_daily_cap_holds_the_rest_until_an_admin_raises_it(stack: Stack, smtp: SmtpSink) -> None:
    configure(stack, smtp, cap=50)
    stack.up()
    apply(stack, OUTREACH)
    run_id = start(stack, "outreach")

    run = wait_status(stack, run_id, "waiting", "completed", "failed")
    assert run["status"] == "waiting", run
    assert len(smtp.messages) == 50
    mails = [s for s in run["steps"] if s["id"].endswith("/mail")]
    held = [s for s in mails if s["status"] == "waiting"]
    assert len(held) == 10 and sum(s["status"] == "done" for s in mails) == 50, mails
    tomorrow = datetime.now(ZoneInfo("Europe/Amsterdam")).date() + timedelta(days=1)
    reason = (f"held: Nova's daily limit of 50 external actions is reached; waits until {tomorrow:%Y-%m-%d} 00:00 "
              "Europe/Amsterdam or an admin raises it")
    assert {s["error"] for s in held} == {reason}, held
    sent_to = {m["To"] for m in smtp.messages}
    assert {f"client{s['id'].split('[')[1].split(']')[0]}@example.test" for s in held}.isdisjoint(sent_to)
    assert _capped_rows(stack) == 1  # the feed says it once, not once per held step

    # An admin raises the cap: the held steps go at once.
    raised = stack.cli("budget", "set", "member:nova", "--effects", "60", "--as", "ana")
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.strip().endswith("10 held step(s) released"), raised.stdout
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed", run
    assert len(smtp.messages) == 60
    assert len({m["To"] for m in smtp.messages}) == 60  # each client once: the 50 sent are not sent again
    assert all(s["error"] is None for s in run["steps"]), run
    assert all(s["attempts"] == 1 for s in run["steps"] if s["id"].endswith("/mail")), run  # being held is no attempt
    assert _capped_rows(stack) == 1


def test_a_conversations_effect_past_the_cap_is_refused_and_the_model_is_told_why(stack: Stack, smtp: SmtpSink) -> None:
    configure(stack, smtp, cap=1, autonomy="auto")
    stack.up()
    email = {"to": "ap@brightside.test", "subject": "Invoice INV-1001", "text": "A friendly reminder."}
    stack.llm.script(
        Reply(tool_uses=[{"name": "send_email", "input": email}]),
        Reply(tool_uses=[{"name": "send_email", "input": {**email, "to": "finance@kanaal.test"}}]),
        Reply(text="I sent one reminder; my daily limit stopped the second."),
    )
    stack.driver().dm(ANA, "Please remind Brightside and Kanaal about their invoices.", channel=NOVA_DM)
    wait_until(lambda: any("daily limit" in p["text"] for p in stack.slack.posts_by("xoxb-nova-0001")), what="Nova's answer")

    assert [m["To"] for m in smtp.messages] == ["ap@brightside.test"]
    stack.llm.wait_for_requests(3)
    [first, second] = _tool_results(stack)
    assert "is_error" not in first, first
    assert second.get("is_error") is True
    text = second["content"]
    assert "Nova's daily limit of 1 external action is reached" in text, text
    assert "It resets at midnight tonight (Europe/Amsterdam time)" in text, text
    assert f"An admin can raise it (<@{ANA}>, with `teammates budget set member:nova --effects N`)" in text, text
    assert _capped_rows(stack) == 1


def test_an_agent_steps_effect_past_the_cap_does_not_run_and_the_model_hears_why(stack: Stack, smtp: SmtpSink) -> None:
    configure(stack, smtp, cap=1)
    stack.up()
    email = {"to": "ap@brightside.test", "subject": "Invoice INV-1001", "text": "A friendly reminder."}
    stack.llm.script(
        Reply(tool_uses=[{"name": "send_email", "input": email}, {"name": "send_email", "input": {**email, "to": "finance@kanaal.test"}}]),
        Reply(text="One reminder sent; the other waits for tomorrow."),
    )
    apply(stack, """
name: chase
member: nova
trigger: {manual: {}}
autonomy: auto
steps:
  - {id: write, agent: nova, prompt: Remind both clients}
""")
    run = wait_status(stack, start(stack, "chase"), "completed", "failed")
    assert run["status"] == "completed", run
    assert run["steps"][0]["output"] == "One reminder sent; the other waits for tomorrow."
    assert [m["To"] for m in smtp.messages] == ["ap@brightside.test"]
    [sent, refused] = _tool_results(stack)
    assert "is_error" not in sent, sent
    assert refused.get("is_error") is True
    assert "Nova's daily limit of 1 external action is reached" in refused["content"], refused
    assert _capped_rows(stack) == 1


def _tool_results(stack: Stack) -> list[dict[str, Any]]:
    """The tool_result blocks of the turn's last model call (it carries the whole turn)."""
    calls = [r for r in stack.llm.requests if r["path"] == "/v1/messages"]
    last = calls[-1]["body"]["messages"]
    return [b for m in last if isinstance(m.get("content"), list) for b in m["content"] if b.get("type") == "tool_result"]


def _capped_rows(stack: Stack) -> int:
    async def count() -> int:
        from sqlalchemy import func, select

        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return int((await session.execute(
                    select(func.count()).select_from(Activity).where(Activity.action == "effect_capped"))).scalar_one())
        finally:
            await db.close()

    return asyncio.run(count())
