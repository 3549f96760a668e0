"""The activity feed in Slack, end to end: what a run did and what people decided arrives in
the workspace's activity channel as one line per action, the run's lines in one thread, each
posted once — also across a restart of the web process that posts them."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import ANA, NOVA, NOVA_DM, Stack, wait_until
from tests.test_approvals import click, requests_posted
from tests.test_workflows import apply, wait_status

FEED = "C0FEED0001"
CLIENTS = "C0CLIENTS1"
Json = dict[str, Any]

WORKFLOW = f"""
name: reminders
member: nova
trigger: {{manual: {{}}}}
inputs:
  - {{name: invoices, type: list, default: [{{client: Acme Corp, number: "2024-015"}}]}}
steps:
  - id: remind
    foreach: "{{{{ inputs.invoices }}}}"
    steps:
      - id: approve
        approval: {{message: "Remind {{{{ item.client }}}} about {{{{ item.number }}}}?", show: "Dear {{{{ item.client }}}}", approvers: [ana]}}
      - id: send
        tool: send_payment_reminder
        args: {{number: "{{{{ item.number }}}}", text: "{{{{ steps.approve.content }}}}"}}
      - id: tell
        post: {{channel: {CLIENTS}, text: "{{{{ steps.approve.content }}}}"}}
"""


def with_feed(stack: Stack) -> None:
    """The workspace's activity channel, a clients' channel outside the team, and an effect tool."""
    (stack.workdir / "acme_tools.py").write_text("async def send_payment_reminder(data):\n    return {'sent': data['number']}\n")
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace("currency: EUR}", f"currency: EUR, channels: {{activity: {FEED}}}}}")
                      + "tools:\n  - {name: send_payment_reminder, description: Email a payment reminder, effect: true,\n"
                        "     python: 'acme_tools:send_payment_reminder', input: {type: object, required: [number, text],\n"
                        "     properties: {number: {type: string, description: the invoice number}, text: {type: string}}}}\n")
    stack.slack.add_channel(FEED, "team-activity", [ANA, NOVA["user"]])
    stack.slack.add_channel(CLIENTS, "clients", [NOVA["user"]])


def feed(stack: Stack) -> list[Json]:
    return stack.slack.messages(FEED)


def run_reminders(stack: Stack) -> str:
    apply(stack, WORKFLOW)
    result = stack.cli("workflow", "run", "reminders", "--as", "ana")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert request["channel"] == NOVA_DM
    assert click(stack, request, "approval.approve", ANA) == 200
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    return run_id


EXPECTED = [
    "Applied reminders (version 1)",  # `workflow apply` (without --as: by the system)
    f"Nova started reminders for <@{ANA}> from the command line",
    f"Nova asked <@{ANA}> to approve: Remind Acme Corp about 2024-015?",
    f"<@{ANA}> approved: Remind Acme Corp about 2024-015?",
    "Nova sent a payment reminder to Acme Corp for invoice 2024-015",
    f"Nova posted a message in <#{CLIENTS}>",
    "Nova finished reminders",
]


def test_a_run_is_one_thread_of_lines_and_the_people_s_actions_are_beside_them(stack: Stack) -> None:
    with_feed(stack)
    stack.up()
    run_reminders(stack)
    lines = wait_until(lambda: feed(stack) if len(feed(stack)) >= len(EXPECTED) else None, what=f"the feed's lines: {feed(stack)}")
    assert [m["text"] for m in lines] == EXPECTED
    applied, parent, *replies = lines
    assert not applied.get("thread_ts") and parent.get("thread_ts") in (None, parent["ts"])  # top level
    assert all(m["thread_ts"] == parent["ts"] for m in replies)  # one thread per run: the channel sees one message
    assert all(m.get("bot_id") == NOVA["bot"] for m in lines)  # posted as Nova's own bot
    # A person's action outside any run is a line of its own.
    assert stack.cli("workflow", "pause", "reminders").returncode == 0
    [paused] = wait_until(lambda: feed(stack)[len(EXPECTED):], what="the pause in the feed")
    assert paused["text"] == "Paused reminders from the command line"
    assert not paused.get("thread_ts")
    # Nothing else: the steps in between (the approval step, the foreach) have no line.
    time.sleep(3)
    assert len(feed(stack)) == len(EXPECTED) + 1


def test_nothing_is_posted_twice_when_the_web_process_dies_mid_post_and_starts_again(stack: Stack) -> None:
    with_feed(stack)
    stack.up()
    # The feed's first line (`workflow apply`'s) lands in Slack, but its poster is killed before
    # it hears back: its record says it was being posted, not that it landed.
    stack.slack.delay_next("chat.postMessage", 30)
    apply(stack, WORKFLOW)
    wait_until(lambda: feed(stack), what="the first line to land")
    stack.stop("web", 9)
    stack.start_web()
    run_reminders(stack)
    lines = wait_until(lambda: feed(stack) if len(feed(stack)) >= len(EXPECTED) else None, timeout=150,
                       what=f"the feed's lines: {[m['text'] for m in feed(stack)]}")
    # Once the dead poster's lease ran out, the restarted process found the line in Slack (it
    # carries its record's id) and did not post it again; the run's lines went on meanwhile.
    assert [m["text"] for m in lines] == EXPECTED
    assert all(m["thread_ts"] == lines[1]["ts"] for m in lines[2:])
    # And a restart with everything posted posts nothing.
    stack.stop("web")
    stack.start_web()
    time.sleep(5)
    assert [m["text"] for m in feed(stack)] == EXPECTED
