"""After an attempt dies between a post and its record, the retry looks for the post before
posting again, and finds it however many messages came around it (within a few hundred)."""

from __future__ import annotations

from tests.conftest import ANA, BOB, GENERAL, NOVA, Stack
from tests.test_workflows import apply, start, wait_status

ANNOUNCEMENT = "Quarterly numbers are in: see the finance channel."
ANSWER = "Yes: the numbers are final."


def test_posts_that_landed_before_their_attempt_died_are_found_behind_many_messages(stack: Stack) -> None:
    stack.slack.set_read_limit(15)  # Tier 1, as for every app outside the Marketplace
    stack.up()
    question = stack.slack.add_message(GENERAL, ANA, "Are the Q3 numbers final?")
    for i in range(20):  # a long thread: the member's answer comes after 20 replies
        stack.slack.add_message(GENERAL, BOB, f"reply {i}", thread_ts=question)
    apply(stack, f"""
name: announce
member: nova
trigger: {{manual: {{}}}}
steps:
  - id: say
    post: {{channel: {GENERAL}, text: "{ANNOUNCEMENT}"}}
    timeout: 1s
    retry: {{max: 2, backoff: 1s}}
  - id: answer
    post: {{channel: {GENERAL}, text: "{ANSWER}", thread_ts: "{question}"}}
    timeout: 1s
    retry: {{max: 2, backoff: 1s}}
""")
    # Each post lands in Slack, but its answer arrives after the step's timeout: the attempt
    # ends without recording it, as when a worker dies between the post and the record. The
    # moment the first one lands, the channel moves on: 40 messages before the retry looks.
    stack.slack.delay_next("chat.postMessage", 2.5, times=2)
    stack.slack.after_next("chat.postMessage", lambda: [stack.slack.add_message(GENERAL, BOB, f"chatter {i}") for i in range(40)] and None)
    run_id = start(stack, "announce")

    run = wait_status(stack, run_id, "completed", "failed")
    assert [m["text"] for m in stack.slack.posts_by(NOVA["token"])] == [ANNOUNCEMENT, ANSWER]
    assert run["status"] == "completed", run
    assert [s["attempts"] for s in run["steps"]] == [2, 2], run  # each retry had to reconcile
