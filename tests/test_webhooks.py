"""`POST /hooks/{workflow}` as an outside sender (and an attacker) sees it: a timestamped
signature, one run per delivery id, and one indistinguishable 401 for every failure."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

from tests.conftest import NOVA, Stack
from tests.test_workflows import apply, run_json, wait_status

SECRET = b"s3cret"
HOOK = """
name: intake
member: nova
trigger: {webhook: {secret: "${HOOK_SECRET}"}}
inputs: [{name: who, type: string}]
steps:
  - id: greet
    post: {channel: C0GENERAL1, text: "New lead: {{ inputs.who }}"}
"""


def headers(body: bytes, delivery: str, *, secret: bytes = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret, f"v1:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Teammates-Timestamp": timestamp, "X-Teammates-Delivery": delivery, "X-Teammates-Signature": f"v1={digest}"}


def post(stack: Stack, workflow: str, body: bytes, head: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"{stack.url}/hooks/{workflow}", data=body, headers=head)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def runs(stack: Stack) -> list[dict[str, object]]:
    result = stack.cli("runs", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_a_replayed_delivery_starts_no_second_run_and_gets_the_first_run_id(stack: Stack) -> None:
    stack.env["HOOK_SECRET"] = SECRET.decode()
    stack.up()
    apply(stack, HOOK)
    body = json.dumps({"who": "Acme"}).encode()
    first = headers(body, "delivery-0001")
    status, answer = post(stack, "intake", body, first)
    assert status == 202, answer
    run_id = answer["run_id"]
    # The sender's retry, and an attacker replaying the captured request: the first run's id.
    assert post(stack, "intake", body, first) == (202, {"run_id": run_id})
    assert post(stack, "intake", body, headers(body, "delivery-0001")) == (202, {"run_id": run_id})
    wait_status(stack, run_id, "completed")
    # A new delivery id is a new run.
    status, other = post(stack, "intake", body, headers(body, "delivery-0002"))
    assert status == 202 and other["run_id"] != run_id
    wait_status(stack, str(other["run_id"]), "completed")
    assert sorted(r["id"] for r in runs(stack)) == sorted([run_id, other["run_id"]])
    assert [p["text"] for p in stack.slack.wait_for_posts(2, token=NOVA["token"])] == ["New lead: Acme"] * 2
    assert run_json(stack, str(run_id))["input"] == {"who": "Acme"}


def test_stale_unknown_and_badly_signed_requests_all_get_the_same_401(stack: Stack) -> None:
    stack.env["HOOK_SECRET"] = SECRET.decode()
    stack.up()
    apply(stack, HOOK)
    apply(stack, HOOK.replace("name: intake", "name: manual-only").replace('webhook: {secret: "${HOOK_SECRET}"}', "manual: {}"), "m.yml")
    body = json.dumps({"who": "Acme"}).encode()
    answers = {
        "stale": post(stack, "intake", body, headers(body, "d-stale", at=time.time() - 6 * 60)),
        "future": post(stack, "intake", body, headers(body, "d-future", at=time.time() + 6 * 60)),
        "bad signature": post(stack, "intake", body, headers(body, "d-bad", secret=b"guess")),
        "old body-only signature": post(stack, "intake", body, {
            "X-Teammates-Signature": "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()}),
        "no delivery id": post(stack, "intake", body, {**headers(body, "x"), "X-Teammates-Delivery": ""}),
        "unknown workflow": post(stack, "nosuch", body, headers(body, "d-unknown")),
        "not a webhook workflow": post(stack, "manual-only", body, headers(body, "d-manual")),
    }
    assert {case: answer[0] for case, answer in answers.items()} == dict.fromkeys(answers, 401)
    assert len({json.dumps(answer[1]) for answer in answers.values()}) == 1, answers
    assert runs(stack) == []
    # Still open to a properly signed, fresh request (the clock is not the problem).
    assert post(stack, "intake", body, headers(body, "d-good", at=time.time() - 60))[0] == 202
