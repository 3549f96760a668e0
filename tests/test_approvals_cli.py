"""An operator decides approvals from the terminal (`teammates approvals ...`) with the same
rights as a click in Slack: the approver's decision resumes the run and updates the posted
request; anyone else is refused with one line and nothing changes. Real web and worker
processes, real Redis, the Slack fake."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tests.conftest import ANA, BOB, GENERAL, NOVA, Stack, wait_until
from tests.test_approvals import requests_posted, status_line
from tests.test_workflows import apply, pending_approval, run_json, start, wait_status

ASK_FIRST = """
name: ask-first
member: nova
trigger: {manual: {}}
steps:
  - id: ask
    approval: {message: "Send the reminder?", show: "Dear client, please pay.", approvers: [ana], timeout: 1h}
  - id: send
    post: {channel: C0GENERAL1, text: "{{ steps.ask.content }}"}
"""

SUMMARY_KEYS = ["id", "run_id", "workflow", "member", "title", "status", "approvers", "quorum", "decisions", "expires_at"]


def pending(stack: Stack) -> list[dict[str, Any]]:
    result = stack.cli("approvals", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def shown(stack: Stack, approval_id: str) -> dict[str, Any]:
    result = stack.cli("approvals", "show", approval_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def waiting_run(stack: Stack) -> tuple[str, str]:
    stack.up()
    apply(stack, ASK_FIRST)
    run_id = start(stack, "ask-first")
    approval = pending_approval(stack, run_id)
    wait_status(stack, run_id, "waiting")
    wait_until(lambda: requests_posted(stack), what="the approval request in Ana's DM")
    return run_id, approval


def in_general(stack: Stack) -> list[str]:
    return [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL]


def test_ana_approves_an_edited_draft_from_the_terminal_and_the_run_posts_it(stack: Stack) -> None:
    run_id, approval = waiting_run(stack)

    [item] = pending(stack)
    assert list(item) == SUMMARY_KEYS
    assert {k: v for k, v in item.items() if k != "expires_at"} == {
        "id": approval, "run_id": run_id, "workflow": "ask-first", "member": "nova", "title": "Send the reminder?",
        "status": "pending", "approvers": ["ana"], "quorum": 1, "decisions": []}
    assert datetime.fromisoformat(item["expires_at"]).utcoffset() is not None
    listing = stack.cli("approvals")
    assert listing.returncode == 0, listing.stderr
    assert f"{approval}  ask-first  Send the reminder?  approvers: ana  expires: " in listing.stdout

    steps = {s["id"]: s for s in run_json(stack, run_id)["steps"]}
    assert steps["ask"]["approval_id"] == approval

    (stack.workdir / "edited.txt").write_text("Dear client, please pay by Friday.\n", encoding="utf-8")
    result = stack.cli("approvals", "approve", approval, "--as", "ana", "--content-file", "edited.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{approval}: approved as ana"

    run = wait_status(stack, run_id, "completed", "failed")
    assert run["status"] == "completed"
    assert in_general(stack) == ["Dear client, please pay by Friday."]
    assert [(s["id"], s["approval_id"]) for s in run["steps"]] == [("ask", approval), ("send", None)]
    # The copy in Ana's DM shows the outcome, its buttons gone, as after a click.
    [request] = requests_posted(stack)
    assert "Approved by" in status_line(request) and f"<@{ANA}>" in status_line(request)
    assert "approval.approve" not in json.dumps(request["blocks"])
    assert pending(stack) == []

    again = stack.cli("approvals", "reject", approval, "--as", "ana")
    assert again.returncode == 1
    assert again.stderr.strip() == f"teammates: {approval}: This request was already approved by ana ({ANA})."
    assert shown(stack, approval)["status"] == "approved"


def test_bob_is_refused_and_anas_rejection_with_a_reason_is_kept(stack: Stack) -> None:
    run_id, approval = waiting_run(stack)

    refused = stack.cli("approvals", "reject", approval, "--as", BOB, "--reason", "no")
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"teammates: {approval}: Only ana ({ANA}) or an admin can approve this."
    assert [a["id"] for a in pending(stack)] == [approval]
    assert shown(stack, approval)["decisions"] == []
    assert wait_status(stack, run_id, "waiting")["status"] == "waiting"

    # `--as` is required; a content file must be UTF-8 and at most 3000 characters: one line each
    missing = stack.cli("approvals", "approve", approval)
    assert missing.returncode == 2 and "--as" in missing.stderr
    (stack.workdir / "long.txt").write_text("x" * 3001, encoding="utf-8")
    (stack.workdir / "latin1.txt").write_bytes("Beste klant, één".encode("latin-1"))
    for name, error in (("long.txt", "at most 3000 characters"), ("latin1.txt", "not a UTF-8 text file")):
        bad = stack.cli("approvals", "approve", approval, "--as", "ana", "--content-file", name)
        assert bad.returncode == 2 and error in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

    result = stack.cli("approvals", "reject", approval, "--as", "ana", "--reason", "too formal")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{approval}: rejected as ana"
    run = wait_status(stack, run_id, "completed", "failed")
    assert in_general(stack) == []  # not approved: nothing sent

    details = shown(stack, approval)
    assert (details["status"], details["decided_by"], details["reason"]) == ("rejected", ANA, "too formal")
    [decision] = details["decisions"]
    assert (decision["by"], decision["decision"], decision["reason"]) == (ANA, "rejected", "too formal")
    assert details["content"] == "Dear client, please pay."
    [copy] = details["messages"]
    assert copy["platform"] == "slack" and copy["message"] == requests_posted(stack)[0]["ts"]
    assert [(s["id"], s["approval_id"]) for s in run["steps"]][0] == ("ask", approval)
    plain = stack.cli("approvals", "show", approval)
    assert plain.returncode == 0 and "rejected by U0ANA00001" in plain.stdout and "too formal" in plain.stdout


def test_a_quorum_counts_each_approver_once_and_the_last_one_resumes_the_run(stack: Stack) -> None:
    stack.up()
    apply(stack, ASK_FIRST.replace("approvers: [ana]", f"approvers: [ana, {BOB}], quorum: 2"))
    run_id = start(stack, "ask-first")
    approval = pending_approval(stack, run_id)
    wait_status(stack, run_id, "waiting")

    first = stack.cli("approvals", "approve", approval, "--as", "ana")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{approval}: approval counted as ana (1 of 2)"
    twice = stack.cli("approvals", "approve", approval, "--as", ANA)  # her Slack id: the same person
    assert twice.returncode == 1 and "You approved already; 1 more needed." in twice.stderr
    [item] = pending(stack)
    assert [(d["by"], d["decision"]) for d in item["decisions"]] == [(ANA, "approved")]

    last = stack.cli("approvals", "approve", approval, "--as", BOB)
    assert last.returncode == 0, last.stderr
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    assert in_general(stack) == ["Dear client, please pay."]
    unknown = stack.cli("approvals", "approve", "nosuchapproval", "--as", "ana")
    assert unknown.returncode == 2 and "no approval 'nosuchapproval'" in unknown.stderr
