"""Business tools from `tools:` and `send_email` from `email:`, end to end: real `teammates`
processes call a small invoicing API (an aiohttp app in this test process) and a real SMTP
server (aiosmtpd), and the Anthropic fake shows what reached the model."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from storage import workflows as store
from storage.db import Database
from storage.models import utcnow
from tests.conftest import ANA, NOVA_DM, Stack, free_port, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_workflows import apply, start, wait_status

TOKEN = "inv-Tok3n-8f2k9QxZ"  # the API's bearer token, stored with `teammates secret set`
KEY = "correct horse battery staple"

INVOICES = [
    {"number": "INV-1001", "client": "Brightside BV", "client_email": "ap@brightside.test", "amount": 1200.0,
     "days_overdue": 12, "reminders_sent": 1, "internal_note": "disputed by their CFO"},
    {"number": "INV-1002", "client": "Kanaal & Co", "client_email": "finance@kanaal.test", "amount": 480.5,
     "days_overdue": 31, "reminders_sent": 2, "internal_note": "pays late every quarter"},
]


@dataclass
class InvoicingApi:
    """The business API the tools call: checks the bearer token, records every request,
    charges once per distinct Idempotency-Key, and can be told to answer slowly."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    charged: dict[str, dict[str, Any]] = field(default_factory=dict)
    charge_delay: float = 0.0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InvoicingApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/invoices", self._invoices)
        app.router.add_get("/whoami", self._whoami)
        app.router.add_get("/ledger", self._ledger)
        app.router.add_post("/charges", self._charge)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _record(self, request: web.Request, body: Any = None) -> web.Response | None:
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return None

    async def _invoices(self, request: web.Request) -> web.Response:
        refused = self._record(request)
        min_days = int(request.query.get("min_days", "0"))
        return refused or web.json_response({"invoices": [i for i in INVOICES if i["days_overdue"] >= min_days], "page": 1})

    async def _whoami(self, request: web.Request) -> web.Response:
        # A careless API: it echoes the credentials it was sent.
        return self._record(request) or web.json_response({"user": "nova-bot", "you_sent": request.headers["Authorization"]})

    async def _ledger(self, request: web.Request) -> web.Response:
        refused = self._record(request)
        return refused or web.json_response({"lines": [{"n": n, "memo": f"ledger line {n:05d}"} for n in range(5000)]})

    async def _charge(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._record(request, body)
        if refused:
            return refused
        key = request.headers.get("Idempotency-Key", "")
        if key not in self.charged:
            self.charged[key] = {"id": f"ch_{len(self.charged) + 1}", **body}
        await asyncio.sleep(self.charge_delay)  # the charge is made; the answer is slow
        return web.json_response({"charge": self.charged[key]["id"], "status": "succeeded"})


class Mailbox:
    """aiosmtpd handler: every message the server accepted."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(bytes(envelope.content))
        return "250 2.0.0 Ok: queued as Q1"


@pytest.fixture
def api() -> Iterator[InvoicingApi]:
    server = InvoicingApi().start()
    yield server
    server.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def tools_config(api_url: str, smtp_port: int = 1) -> str:
    return f"""
secrets_key: ${{TEAMMATES_SECRETS_KEY}}
tools:
  - name: get_overdue_invoices
    description: Invoices past their due date
    http: {{method: GET, url: "{api_url}/invoices?status=overdue&min_days={{{{ min_days }}}}",
           headers: {{Authorization: "Bearer {{{{ secrets.INVOICING_TOKEN }}}}"}}}}
    input: {{type: object, properties: {{min_days: {{type: integer, default: 7}}}}}}
    returns: "invoices[].{{number: number, client: client, days: days_overdue}}"
  - name: whoami
    description: Which account the invoicing API sees
    http: {{url: "{api_url}/whoami", headers: {{Authorization: "Bearer {{{{ secrets.INVOICING_TOKEN }}}}"}}}}
  - name: export_ledger
    description: The whole ledger
    http: {{url: "{api_url}/ledger", headers: {{Authorization: "Bearer {{{{ secrets.INVOICING_TOKEN }}}}"}}}}
  - name: charge_card
    description: Charge the client's card on file for an invoice
    http: {{method: POST, url: "{api_url}/charges", headers: {{Authorization: "Bearer {{{{ secrets.INVOICING_TOKEN }}}}"}}}}
    input: {{type: object, properties: {{invoice: {{type: string}}, amount: {{type: number}}}}, required: [invoice, amount]}}
    effect: true
email:
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  from: "Nova at Acme <nova@acme.test>"
"""


def configure(stack: Stack, api: InvoicingApi, smtp_port: int = 1) -> None:
    """Nova gets the business tools; the API's token is stored as a secret."""
    path = stack.workdir / "teammates.yml"
    config = path.read_text().replace(
        "tools: [get_thread_history, lookup_user, post_message]",
        "tools: [get_thread_history, lookup_user, post_message, get_overdue_invoices, whoami, export_ledger, charge_card, send_email]",
    )
    path.write_text(config + tools_config(api.url, smtp_port))
    stack.env["TEAMMATES_SECRETS_KEY"] = KEY
    stored = stack.cli("secret", "set", "INVOICING_TOKEN", input=TOKEN + "\n")
    assert stored.returncode == 0, stored.stderr


def tool_results(stack: Stack) -> list[dict[str, Any]]:
    """Every tool_result block the model was sent, in order."""
    found = []
    for request in stack.llm.requests:
        for message in request["body"].get("messages", []) if isinstance(request["body"], dict) else []:
            if isinstance(message.get("content"), list):
                found += [b for b in message["content"] if b.get("type") == "tool_result"]
    return found


def ask(stack: Stack, tool: str, tool_input: dict[str, Any], answer: str = "Done.") -> dict[str, Any]:
    """Ana asks Nova in a DM; the model calls `tool` once, then answers. The tool_result."""
    stack.llm.script(Reply(tool_uses=[{"name": tool, "input": tool_input}]), Reply(text=answer))
    stack.driver().dm(ANA, "Can you check that for me?", channel=NOVA_DM)
    wait_until(lambda: any(p["text"] == answer for p in stack.slack.posts_by("xoxb-nova-0001")), what="Nova's answer")
    [result] = tool_results(stack)
    return result


def test_the_selected_fields_of_an_http_tools_answer_reach_the_model(stack: Stack, api: InvoicingApi) -> None:
    configure(stack, api)
    stack.up()
    result = ask(stack, "get_overdue_invoices", {"min_days": 10}, "Two invoices are overdue.")

    assert "is_error" not in result, result
    assert json.loads(result["content"]) == [
        {"number": "INV-1001", "client": "Brightside BV", "days": 12},
        {"number": "INV-1002", "client": "Kanaal & Co", "days": 31},
    ]
    [call] = api.requests
    assert call["query"] == {"status": "overdue", "min_days": "10"}
    assert call["headers"]["Authorization"] == f"Bearer {TOKEN}"
    # What the model sees is declared: the tool's schema is the configured JSON Schema.
    [tool] = [t for t in stack.llm.requests[0]["body"]["tools"] if t["name"] == "get_overdue_invoices"]
    assert tool["input_schema"]["properties"] == {"min_days": {"type": "integer", "default": 7}}


def test_bad_input_from_the_model_comes_back_as_a_tool_error_and_calls_nothing(stack: Stack, api: InvoicingApi) -> None:
    configure(stack, api)
    stack.up()
    result = ask(stack, "charge_card", {"invoice": "INV-1001", "amount": "a lot"})
    assert result.get("is_error") and "invalid input for charge_card: amount: 'a lot' is not of type 'number'" in result["content"]
    assert api.requests == []


def test_an_oversized_answer_reaches_the_model_capped_with_a_note(stack: Stack, api: InvoicingApi) -> None:
    configure(stack, api)
    stack.up()
    result = ask(stack, "export_ledger", {})
    content = result["content"]
    whole = len(json.dumps({"lines": [{"n": n, "memo": f"ledger line {n:05d}"} for n in range(5000)]}, ensure_ascii=False))
    assert content.startswith('{"lines": [{"n": 0, "memo": "ledger line 00000"}')
    assert len(content) < 8_300
    assert f"[cut: the answer was {whole:,} characters; only the first 8,000 are shown." in content


def test_an_http_effect_retried_after_its_worker_is_killed_is_charged_once(stack: Stack, api: InvoicingApi) -> None:
    configure(stack, api)
    stack.start_web()
    stack.start_worker("doomed")
    api.charge_delay = 30  # the charge is made at once; its answer never comes to the first worker
    apply(stack, """
name: collect
member: nova
trigger: {manual: {}}
autonomy: auto                # this test is about idempotency, not approvals (an admin applies it)
steps:
  - id: charge
    tool: charge_card
    args: {invoice: INV-1002, amount: 480.5}
""")
    run_id = start(stack, "collect")
    wait_until(lambda: any(r["path"] == "/charges" for r in api.requests), what="the charge request")
    stack.procs["doomed"].send_signal(signal.SIGKILL)  # SimpleWorker: the job dies with it
    stack.procs.pop("doomed").wait(10)
    api.charge_delay = 0
    stack.start_worker()  # the step's lease runs out; the reconciler hands it to this worker

    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed", run
    assert run["steps"][0]["attempts"] == 2, run
    assert run["steps"][0]["output"] == {"charge": "ch_1", "status": "succeeded"}
    charges = [r for r in api.requests if r["path"] == "/charges"]
    keys = [r["headers"]["Idempotency-Key"] for r in charges]
    assert len(charges) == 2 and len(set(keys)) == 1, keys  # sent twice, under one key
    assert len(api.charged) == 1  # ... and charged once


def test_send_email_from_a_workflow_step_is_delivered_once_even_when_the_step_runs_again(
        stack: Stack, api: InvoicingApi, mailbox: tuple[Mailbox, int]) -> None:
    box, smtp_port = mailbox
    configure(stack, api, smtp_port)
    stack.up()
    apply(stack, """
name: remind
member: nova
trigger: {manual: {}}
autonomy: auto                # this test is about idempotency, not approvals (an admin applies it)
steps:
  - id: send
    tool: send_email
    args: {to: ap@brightside.test, subject: "Invoice INV-1001", text: "Friendly reminder: INV-1001 is 12 days overdue."}
""")
    run_id = start(stack, "remind")
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed", run
    [raw] = box.messages
    mail = message_from_bytes(raw)
    message_id = mail["Message-ID"]
    assert mail["To"] == "ap@brightside.test" and mail["Subject"] == "Invoice INV-1001"
    assert message_id.startswith("<wf-") and message_id.endswith("@teammates.local>")
    assert run["steps"][0]["output"]["message_id"] == message_id

    # The worker dies after the email went out and was recorded, before the step was: its
    # row is left `running` with a lease that runs out. The step runs again, and finds it sent.
    asyncio.run(_left_running(stack, run_id, "send"))
    wait_until(lambda: _attempts(stack, run_id) == 2, what="the step to run again")
    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed", run
    assert len(box.messages) == 1
    assert run["steps"][0]["output"]["message_id"] == message_id


async def _left_running(stack: Stack, run_id: str, path: str) -> None:
    db = Database(stack.env["DATABASE_URL"])
    try:
        async with db.session() as session:
            run = await store.run(session, run_id)
            assert run is not None
            run.status = "running"
            run.finished_at = None
            await store.update_step(session, run_id, path, where_status=("done",), status="running",
                                    lease_until=utcnow(), finished_at=None)
    finally:
        await db.close()


def _attempts(stack: Stack, run_id: str) -> int:
    async def go() -> int:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                [step] = (await store.steps(session, run_id)).values()
                return int(step.attempt) if step.status == "done" else 0
        finally:
            await db.close()

    return asyncio.run(go())


def test_a_secret_in_an_authorization_header_reaches_the_api_and_nothing_else(stack: Stack, api: InvoicingApi) -> None:
    configure(stack, api)
    stack.up()
    result = ask(stack, "whoami", {}, "I am nova-bot there.")
    assert json.loads(result["content"]) == {"user": "nova-bot", "you_sent": "Bearer [secret]"}
    apply(stack, """
name: who
member: nova
trigger: {manual: {}}
steps:
  - {id: who, tool: whoami}
""")
    run = wait_status(stack, start(stack, "who"), "completed", "failed")
    assert run["steps"][0]["output"] == {"user": "nova-bot", "you_sent": "Bearer [secret]"}, run
    assert [r["headers"]["Authorization"] for r in api.requests] == [f"Bearer {TOKEN}"] * 2

    time.sleep(0.2)  # the last log lines
    places = {"prompts": json.dumps(stack.llm.requests), "runs --json": stack.cli("runs", "--json").stdout,
              "logs": stack.logs("web") + stack.logs("worker"), "posts": json.dumps(stack.slack.posts_by("xoxb-nova-0001"))}
    for where, text in places.items():
        assert TOKEN not in text, f"the token is in the {where}"
    assert "tool whoami: GET 127.0.0.1" in places["logs"]  # the logs were really looked at


def test_a_python_tool_beside_the_config_gets_the_input_and_its_answer_is_selected(stack: Stack) -> None:
    (stack.workdir / "acme_tools.py").write_text(
        "async def open_deals(data):\n"
        "    return [{'deal': f'{data[\"stage\"]}-{n}', 'owner': 'ana', 'notes': 'x' * 50} for n in range(2)]\n"
    )
    path = stack.workdir / "teammates.yml"
    path.write_text(path.read_text().replace("tools: [get_thread_history, lookup_user, post_message]",
                                             "tools: [get_thread_history, lookup_user, post_message, open_deals]")
                    + "tools:\n  - {name: open_deals, description: Open deals, python: 'acme_tools:open_deals', returns: '[].deal',\n"
                      "     input: {type: object, properties: {stage: {type: string}}, required: [stage]}}\n")
    stack.up()
    result = ask(stack, "open_deals", {"stage": "proposal"})
    assert json.loads(result["content"]) == ["proposal-0", "proposal-1"]


def test_loading_another_config_replaces_the_configured_tools(tmp_path: Path) -> None:
    from agents.tools.registry import known_tools
    from jobs.business_tools import install
    from teammates.config import ConfigError, load

    def configured(*names: str) -> Path:
        path = tmp_path / f"{'-'.join(names) or 'none'}.yml"
        path.write_text("tools:\n" + "".join(f"  - {{name: {n}, description: x, http: {{url: 'https://api.test/{n}'}}}}\n" for n in names)
                        if names else "{}\n")
        return path

    try:
        install(load(str(configured("find_deal", "get_invoice")), env={}))
        assert {"find_deal", "get_invoice", "post_message"} <= set(known_tools())
        install(load(str(configured("get_invoice")), env={}))
        assert "find_deal" not in known_tools() and "get_invoice" in known_tools()
        with pytest.raises(ConfigError, match="'lookup_user' is the name of a built-in tool"):
            install(load(str(configured("lookup_user")), env={}))
        assert "get_invoice" in known_tools() and "lookup_user" in known_tools()  # nothing changed
    finally:
        install(load(str(configured()), env={}))
    assert "get_invoice" not in known_tools()


@pytest.mark.parametrize(("entry", "problem"), [
    ("{name: find, description: x, http: {url: 'https://api.test/x'}, returns: 'invoices[.'}",
     "tools[find].returns: expected a JMESPath expression"),
    ("{name: post_message, description: x, http: {url: 'https://api.test/x'}}",
     "tools: 'post_message' is the name of a built-in tool"),
    ("{name: find, description: x, http: {url: 'https://api.test/x'}, python: 'acme:find'}",
     "tools[find]: expected exactly one of http: or python:"),
    ("{name: find, description: x, http: {url: 'https://{{ host }}/x'}}",
     "tools[find].http.url: expected a URL template starting with http:// or https:// and a fixed host"),
    ("{name: find, description: x, http: {method: POST, url: 'https://api.test/x', body: '{{ secrets.T }}'}}",
     "tools[find].http.body: expected a template without secrets"),
    ("{name: find, description: x, python: 'no_such_module_here:find'}",
     "tools[find].python: cannot import module 'no_such_module_here'"),
    ("{name: find, description: x, http: {url: 'https://api.test/x'}, input: {type: object, properties: {n: {type: count}}}}",
     "tools[find].input: expected a valid JSON Schema"),
])
def test_a_bad_tools_entry_is_one_clear_line_and_a_non_zero_exit(stack: Stack, entry: str, problem: str) -> None:
    path = stack.workdir / "teammates.yml"
    path.write_text(path.read_text() + f"tools:\n  - {entry}\n")
    for command in (["check"], ["workflow", "list"]):
        result = stack.cli(*command)
        assert result.returncode == 2, result
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("teammates: ") and problem in line, line
