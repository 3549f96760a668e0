"""The turn job under crashes, dead channels and quick messages: every message of a
conversation is answered once, in order, with the answers before it in its context; one that
cannot be answered ends `failed` with its reason, and costs no more LLM calls."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import Any

from tests.conftest import ANA, NOVA, NOVA_DM, Stack
from tests.fakes.anthropic_api import Reply

# Lost turns are found fast: a killed worker's lease lasts 10 s, the sweeper looks every second.
FAST = "workers: {step_lease: 3, reconcile_every: 1, channel_post_interval: 0, turn_timeout: 10, sweep_every: 1, sweep_after: 1}"


def fast_sweeper(stack: Stack) -> None:
    path = stack.workdir / "teammates.yml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("workers:"))
    path.write_text(text.replace(old, FAST))


def replies(stack: Stack) -> Counter[str]:
    return Counter(p["text"] for p in stack.slack.posts_by(NOVA["token"]))


def test_a_worker_killed_mid_turn_leaves_the_message_answered_exactly_once(stack: Stack) -> None:
    fast_sweeper(stack)
    stack.up()
    first = threading.Event()

    def respond(_body: dict[str, Any]) -> Reply:
        if not first.is_set():
            first.set()
            return Reply(text="never delivered", delay=4.0)  # the worker dies while waiting
        return Reply(text="The answer.")

    stack.llm.set_responder(respond)
    stack.driver().dm(ANA, "what is overdue?", channel=NOVA_DM)
    stack.llm.wait_for_requests(1)
    stack.stop("worker", sig=signal.SIGKILL)
    stack.start_worker("worker2")
    stack.slack.wait_for_posts(1, token=NOVA["token"], timeout=40)
    time.sleep(3)  # several sweeps later
    assert replies(stack) == Counter({"The answer.": 1})
