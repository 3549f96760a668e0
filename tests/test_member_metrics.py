"""Per-member performance (seed 003): tasks done and failed, approvals asked and decided, the
median time to a decision and the cost per day, in `status --json`, `status` and `/metrics`."""

from __future__ import annotations

import json

from tests.conftest import ANA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_approvals_cli import waiting_run
from tests.test_workflows import apply, start, wait_status

FAILING = """
name: breaks
member: nova
trigger: {manual: {}}
steps:
  - id: post
    post: {channel: C0GENERAL1, text: "hello"}
"""


def test_status_and_metrics_show_each_members_tasks_approvals_wait_and_cost(stack: Stack) -> None:
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace("llm: {model: claude-test-model,",
                                                 "llm: {prices: {claude-test-model: {input: 3, output: 15}}, model: claude-test-model,"))
    run_id, approval = waiting_run(stack)
    decided = stack.cli("approvals", "approve", approval, "--as", "ana")
    assert decided.returncode == 0, decided.stderr
    wait_status(stack, run_id, "completed")
    stack.slack.fail_channel("C0GENERAL1")  # the team channel is gone: the next post fails
    apply(stack, FAILING)
    wait_status(stack, start(stack, "breaks"), "failed")
    stack.llm.set_responder(lambda _body: Reply(text="Hi Ana.", usage={"input_tokens": 1000, "output_tokens": 100,
                                                                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}))
    stack.driver().dm(ANA, "hello", channel=NOVA_DM)
    wait_until(lambda: any(p["text"] == "Hi Ana." for p in stack.slack.posts_by("xoxb-nova-0001")), what="the answer")

    def performance() -> dict:
        done = stack.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout)["performance"]["nova"])

    nova = wait_until(lambda: (p := performance())["messages_answered"] == 1 and p, what="the answered message counted")
    assert (nova["runs_done"], nova["runs_failed"], nova["tasks_done"], nova["tasks_failed"]) == (1, 1, 2, 1)
    assert (nova["approvals_asked"], nova["approvals_approved"], nova["approvals_rejected"], nova["approvals_expired"]) == (1, 1, 0, 0)
    assert nova["median_seconds_to_decision"] is not None and nova["median_seconds_to_decision"] < 120
    [(day, cost)] = nova["cost_per_day"].items()
    assert cost > 0, "the answer's call is priced"
    human = stack.cli("status").stdout
    assert "performance nova (30 days): 2 tasks done, 1 failed; approvals 1 asked, 1 approved, 0 rejected, 0 expired" in human
    scraped = stack.scrape()
    assert 'teammates_member_tasks_30d{member="nova",outcome="done"} 2.0' in scraped
    assert 'teammates_member_approvals_30d{member="nova",outcome="approved"} 1.0' in scraped
    assert "teammates_member_approval_wait_median_seconds" in scraped
