"""The shipped config and payment-reminders workflow, as a user runs them: Nova's tools from
`teammates.example.yml` reach the example business API, the run drafts one reminder per
overdue invoice in the tone its reminder count asks for, skips the client without an email
address, and emails only what a person approved — once each.

Config tools (`tools:` in teammates.yml) are built on a branch of their own; until it is
merged the config format has no `tools:` key and this file is skipped (it then runs as is).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from examples.business_api import BusinessApiServer
from teammates.config import Config
from tests.conftest import ANA, ROOT, Stack, free_port, wait_until
from tests.fakes.anthropic_api import Reply
from tests.fakes.smtp_server import SmtpSink
from tests.test_approvals_cli import pending
from tests.test_workflows import run_json, wait_status

pytestmark = pytest.mark.skipif("tools" not in Config.model_fields,
                                reason="config `tools:` (HTTP business tools) are not in this build yet")

PEOPLE = f"""
people:
  - {{id: ana, name: Ana, slack: {ANA}, email: ana@acme.test}}
admins: [ana]
"""


@pytest.fixture
def business(stack: Stack) -> Iterator[tuple[BusinessApiServer, SmtpSink]]:
    """The example API (mail to a local SMTP server) and the shipped config pointed at it."""
    with SmtpSink() as smtp, BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port) as api:
        config = (ROOT / "teammates.example.yml").read_text()
        # the test's database, Redis and fakes come from the environment; who is who from here
        (stack.workdir / "teammates.yml").write_text(config + PEOPLE)
        stack.env.update({"INVOICING_URL": api.url, "CRM_URL": api.url})
        yield api, smtp


def healthy(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def drafting(body: dict[str, Any]) -> Reply:
    """Nova writes what the prompt asks for, naming the tone so the test can see it."""
    content = body["messages"][-1]["content"]
    prompt = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    tone = re.search(r"Tone: (\w+)\.", prompt)
    client = re.search(r"email to (.+?)\. Tone", prompt)
    return Reply(text=f"[{tone.group(1) if tone else '?'}] Dear {client.group(1) if client else '?'}, please pay. Nova, Acme BV")


def test_payment_reminders_as_shipped_send_only_approved_reminders_once(stack: Stack, business: tuple[BusinessApiServer, SmtpSink]) -> None:
    api, smtp = business
    stack.llm.set_responder(drafting)
    stack.up(workers=1)
    applied = stack.cli("workflow", "apply", str(ROOT / "examples/workflows/payment-reminders.yml"),
                        str(ROOT / "examples/workflows/research-pipeline.yml"), "--as", "ana")
    assert applied.returncode == 0, applied.stderr

    started = stack.cli("workflow", "run", "payment-reminders", "--input", "days_overdue=7", "--as", "ana")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    # 4 invoices are 7+ days overdue; Van Dijk Logistics has no email address: 3 requests
    requests = wait_until(lambda: (lambda p: p if len(p) == 3 else None)([a for a in pending(stack) if a["run_id"] == run_id]),
                          timeout=60, what="three approval requests")
    by_client = {next(c for c in ("Bakkerij de Vries", "Studio Lumen", "Green Leaf Catering") if c in a["title"]): a
                 for a in requests}
    assert "urgent" in by_client["Bakkerij de Vries"]["title"]     # two reminders sent already
    assert "formal" in by_client["Studio Lumen"]["title"]          # one
    assert "friendly" in by_client["Green Leaf Catering"]["title"]  # none

    assert stack.cli("approvals", "approve", by_client["Bakkerij de Vries"]["id"], "--as", "ana").returncode == 0
    assert stack.cli("approvals", "approve", by_client["Green Leaf Catering"]["id"], "--as", "ana").returncode == 0
    assert stack.cli("approvals", "reject", by_client["Studio Lumen"]["id"], "--as", "ana",
                     "--reason", "they paid yesterday").returncode == 0

    run = wait_status(stack, run_id, "completed", "failed", timeout=60)
    assert run["status"] == "completed", run
    assert sorted(to for [to] in smtp.recipients) == ["accounts@greenleafcatering.test", "finance@bakkerijdevries.test"]
    urgent = next(m for m in smtp.messages if m["To"] == "finance@bakkerijdevries.test")
    assert urgent["Subject"].startswith("Urgent: invoice INV-2026-0141")
    assert "[urgent] Dear Bakkerij de Vries" in urgent.get_content()
    assert api.store.invoices["INV-2026-0141"].reminders_sent == 3
    assert api.store.invoices["INV-2026-0152"].reminders_sent == 1   # rejected: not sent
    assert api.store.invoices["INV-2026-0163"].reminders_sent == 0   # no email address: skipped
    assert api.store.stats()["effects"] == 2

    steps = {s["id"]: s for s in run_json(stack, run_id)["steps"]}
    skipped = [s for path, s in steps.items() if path.endswith("has_email_address") and (s["output"] or {}).get("branch") == "else"]
    assert len(skipped) == 1


def test_teammates_run_starts_with_the_business_api_down_and_the_tool_says_so_when_called(stack: Stack) -> None:
    (stack.workdir / "teammates.yml").write_text((ROOT / "teammates.example.yml").read_text() + PEOPLE)
    closed = f"http://127.0.0.1:{free_port()}"
    stack.env.update({"INVOICING_URL": closed, "CRM_URL": closed})
    stack.start("run", "run", "--host", "127.0.0.1", "--port", str(stack.port), "--workers", "2")
    wait_until(lambda: healthy(stack), timeout=60, what=f"teammates run on {stack.port}\n{stack.logs('run')}")

    assert stack.cli("workflow", "apply", str(ROOT / "examples/workflows/payment-reminders.yml"), "--as", "ana").returncode == 0
    started = stack.cli("workflow", "run", "payment-reminders", "--as", "ana")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    def find_failed() -> dict[str, Any] | None:
        step = next((s for s in run_json(stack, run_id)["steps"] if s["id"] == "find"), None)
        return step if step is not None and step["error"] else None

    step = wait_until(find_failed, timeout=60, interval=0.5, what="the find step to fail")
    assert "get_overdue_invoices" in step["error"] and "could not reach" in step["error"]
    assert step["status"] == "retrying"   # it tries again later; nothing else broke
    assert healthy(stack)
