"""The shipped example business API as Nova's and Casey's HTTP tools see it: demo invoices and
leads, reminders and follow-ups that email once per Idempotency-Key, 422 for a client without
an email address, and an optional bearer token."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from examples.business_api import BusinessApiServer, BusinessStore
from tests.conftest import ROOT, free_port, wait_until
from tests.fakes.smtp_server import SmtpSink

INVOICE_KEYS = {"number", "client", "client_email", "amount", "currency", "due_date", "days_overdue", "reminders_sent"}
LEAD_KEYS = {"id", "name", "company", "email", "status", "days_idle", "follow_ups"}
REMINDER = {"subject": "Invoice INV-2026-0158 is overdue", "text": "Dear Green Leaf Catering, a friendly reminder ..."}


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def remind(api: str, number: str, key: str | None, body: Any = REMINDER, timeout: float = 10) -> tuple[int, Any]:
    return call("POST", f"{api}/invoices/{number}/reminders", body, {"Idempotency-Key": key} if key else {}, timeout)


@pytest.fixture
def api(smtp: SmtpSink) -> Iterator[str]:
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port, mail_from="Nova at Acme <nova@acme.test>") as server:
        yield server.url


def test_overdue_invoices_are_listed_with_the_contract_fields(api: str) -> None:
    status, body = call("GET", f"{api}/invoices?status=overdue&min_days=7")
    assert status == 200
    invoices = body["invoices"]
    assert invoices and all(set(i) == INVOICE_KEYS for i in invoices)
    assert all(i["days_overdue"] >= 7 for i in invoices)
    assert [i["days_overdue"] for i in invoices] == sorted((i["days_overdue"] for i in invoices), reverse=True)
    # the demo data covers every tone of reminder and a client that cannot be emailed
    assert {i["reminders_sent"] for i in invoices} >= {0, 1, 2}
    assert any(i["client_email"] is None for i in invoices)

    _, everything = call("GET", f"{api}/invoices")
    overdue = [i for i in everything["invoices"] if i["days_overdue"] > 0]
    assert len(everything["invoices"]) > len(invoices)
    _, fewer = call("GET", f"{api}/invoices?status=overdue&min_days=30")
    assert 0 < len(fewer["invoices"]) < len(invoices) <= len(overdue)

    number = invoices[0]["number"]
    assert call("GET", f"{api}/invoices/{number}") == (200, invoices[0])
    assert call("GET", f"{api}/invoices/INV-0000") == (404, {"error": "no invoice 'INV-0000'"})
    status, error = call("GET", f"{api}/invoices?min_days=soon")
    assert status == 400 and "min_days" in error["error"]


def test_a_repeated_idempotency_key_sends_one_email_and_counts_once(api: str, smtp: SmtpSink) -> None:
    _, before = call("GET", f"{api}/invoices/INV-2026-0158")

    first = remind(api, "INV-2026-0158", "wf-run1-remind.2.send")
    again = remind(api, "INV-2026-0158", "wf-run1-remind.2.send")

    assert first[0] == 201 and again[0] == 200
    assert first[1] == again[1]
    assert first[1]["invoice"] == "INV-2026-0158" and first[1]["reminders_sent"] == before["reminders_sent"] + 1
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert smtp.recipients == [["accounts@greenleafcatering.test"]]
    assert mail["Subject"] == REMINDER["subject"] and REMINDER["text"] in mail.get_content()
    assert mail["From"] == "Nova at Acme <nova@acme.test>"
    assert mail["Message-ID"] == f"<{hashlib.sha256(b'wf-run1-remind.2.send').hexdigest()[:40]}@acme.test>"
    _, after = call("GET", f"{api}/invoices/INV-2026-0158")
    assert after["reminders_sent"] == before["reminders_sent"] + 1

    # another key is another reminder: the count moved because of the key, not by accident
    assert remind(api, "INV-2026-0158", "wf-run2-remind.2.send")[0] == 201
    assert len(smtp.messages) == 2
    _, stats = call("GET", f"{api}/_stats")
    assert stats["effects"] == 2
    assert stats["keys"] == {"wf-run1-remind.2.send": 2, "wf-run2-remind.2.send": 1}
    assert stats["requests"] == 5  # 2 GETs, 3 POSTs: /_stats itself is not counted

    # a key is bound to its request: reusing it elsewhere is refused, and nothing is sent
    status, error = remind(api, "INV-2026-0152", "wf-run1-remind.2.send")
    assert status == 409 and "another request" in error["error"]
    assert len(smtp.messages) == 2


def test_a_caller_that_hangs_up_mid_request_and_retries_is_charged_once(smtp: SmtpSink) -> None:
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port, delay=1.5) as server:
        with pytest.raises((TimeoutError, socket.timeout)):
            remind(server.url, "INV-2026-0141", "effect-7", timeout=0.5)   # the worker "dies" waiting
        wait_until(lambda: len(smtp.messages) == 1, timeout=5, what="the first attempt's email")
        # two retries at once, while the first attempt still holds back its answer
        results: list[tuple[int, Any]] = []
        threads = [threading.Thread(target=lambda: results.append(remind(server.url, "INV-2026-0141", "effect-7")))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [status for status, _ in results] == [200, 200]
        assert results[0][1] == results[1][1] and results[0][1]["reminders_sent"] == 3
        assert len(smtp.messages) == 1
        _, stats = call("GET", f"{server.url}/_stats")
        assert stats["effects"] == 1 and stats["keys"] == {"effect-7": 3}


def test_concurrent_first_attempts_with_one_key_send_one_email(smtp: SmtpSink) -> None:
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port, delay=0.3) as server:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(remind(server.url, "INV-2026-0167", "same")[0]))
                   for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [200, 200, 200, 200, 201]
        assert len(smtp.messages) == 1


def test_a_client_without_an_email_address_is_refused_and_nothing_counts(api: str, smtp: SmtpSink) -> None:
    status, body = remind(api, "INV-2026-0163", "k-vandijk")
    assert (status, body) == (422, {"error": "no email address for Van Dijk Logistics"})
    assert remind(api, "INV-2026-0163", "k-vandijk")[0] == 422   # a refusal is not kept as an answer
    _, invoice = call("GET", f"{api}/invoices/INV-2026-0163")
    assert invoice["client_email"] is None and invoice["reminders_sent"] == 0
    assert smtp.messages == []
    _, stats = call("GET", f"{api}/_stats")
    assert stats["effects"] == 0 and stats["keys"] == {"k-vandijk": 2}


def test_posts_need_a_key_and_a_subject_and_text(api: str, smtp: SmtpSink) -> None:
    status, body = remind(api, "INV-2026-0158", None)
    assert status == 400 and "Idempotency-Key" in body["error"]
    status, body = remind(api, "INV-2026-0158", "k", {"subject": "Hi"})
    assert status == 400 and body["error"] == "text: expected a non-empty string"
    status, body = remind(api, "INV-2026-0158", "k", ["not", "an", "object"])
    assert status == 400
    assert smtp.messages == []
    assert call("GET", f"{api}/_stats")[1]["effects"] == 0


def test_a_failed_send_counts_nothing_and_the_same_key_may_try_again(smtp: SmtpSink) -> None:
    store = BusinessStore.seeded()
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=free_port(), store=store) as server:   # no SMTP there
        status, body = remind(server.url, "INV-2026-0158", "try-1")
        assert status == 502 and "could not send" in body["error"]
        _, invoice = call("GET", f"{server.url}/invoices/INV-2026-0158")
        assert invoice["reminders_sent"] == 0
        assert call("GET", f"{server.url}/_stats")[1]["effects"] == 0
    with BusinessApiServer(smtp_host=smtp.host, smtp_port=smtp.port, store=store) as server:   # mail is back
        status, body = remind(server.url, "INV-2026-0158", "try-1")
        assert status == 201 and body["reminders_sent"] == 1
        assert len(smtp.messages) == 1


def test_leads_and_follow_ups(api: str, smtp: SmtpSink) -> None:
    status, body = call("GET", f"{api}/leads?status=new&min_days_idle=3")
    assert status == 200 and body["leads"]
    assert all(set(lead) == LEAD_KEYS and lead["status"] == "new" and lead["days_idle"] >= 3 for lead in body["leads"])
    _, contacted = call("GET", f"{api}/leads?status=contacted")
    assert contacted["leads"] and all(lead["status"] == "contacted" for lead in contacted["leads"])
    lead = body["leads"][0]
    assert call("GET", f"{api}/leads/{lead['id']}") == (200, lead)
    assert call("GET", f"{api}/leads/L-0")[0] == 404
    assert call("GET", f"{api}/leads?status=won")[0] == 400

    message = {"subject": "Following up", "text": f"Hi {lead['name']}, shall we talk this week?"}
    head = {"Idempotency-Key": "fu-1"}
    first = call("POST", f"{api}/leads/{lead['id']}/follow-ups", message, head)
    again = call("POST", f"{api}/leads/{lead['id']}/follow-ups", message, head)
    assert first[0] == 201 and again == (200, first[1])
    assert first[1]["lead"] == lead["id"] and first[1]["follow_ups"] == lead["follow_ups"] + 1
    assert smtp.recipients == [[lead["email"]]]
    _, now = call("GET", f"{api}/leads/{lead['id']}")
    assert now["status"] == "contacted" and now["days_idle"] == 0
    assert call("POST", f"{api}/leads/{lead['id']}/follow-ups", message)[0] == 400


def test_started_as_a_module_with_a_token_it_wants_the_bearer_token() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "examples.business_api", "--port", str(port), "--token", "t0ken"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "t0ken" not in line
        api = f"http://127.0.0.1:{port}"
        assert call("GET", f"{api}/invoices") == (401, {"error": "missing or wrong bearer token"})
        assert call("GET", f"{api}/invoices", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert remind(api, "INV-2026-0158", "k")[0] == 401
        status, body = call("GET", f"{api}/invoices?status=overdue", headers={"Authorization": "Bearer t0ken"})
        assert status == 200 and body["invoices"]
        assert call("POST", f"{api}/invoices/INV-2026-0158/reminders", REMINDER,
                    {"Authorization": "Bearer t0ken", "Idempotency-Key": "k"})[0] == 201
        status, stats = call("GET", f"{api}/_stats")   # open without the token, for tests
        assert status == 200 and stats["effects"] == 1 and stats["requests"] == 5
    finally:
        process.terminate()
        process.wait(timeout=10)
