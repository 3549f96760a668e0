"""Each member's App Home over signed HTTP: opening the Home tab publishes that member's view
for that person with that member's own token (who it is, its status, workflows with last and
next run, the person's pending approvals with their buttons, recent activity, spend); a click
there does what it says and publishes the tab again. Every view passes slack_sdk's models."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ANA, BOB, CASEY, NOVA, Stack, wait_until
from tests.fakes.slack_driver import new_ts
from tests.test_approvals import assert_valid_view, pipeline
from tests.test_slash_commands import DAILY, listed
from tests.test_workflows import apply, wait_status

Json = dict[str, Any]


def open_home(stack: Stack, user: str, member: str = "nova", tab: str = "home") -> int:
    status, _ = stack.driver(member).send_event({"type": "app_home_opened", "user": user, "channel": "D0HOME0001", "tab": tab,
                                                 "event_ts": new_ts()})
    return status


def publishes(stack: Stack, user: str) -> list[Json]:
    return [c for c in stack.slack.calls_to("views.publish") if c["params"].get("user_id") == user]


def home(stack: Stack, user: str, after: int = 0) -> Json:
    """The view published for `user` once more than `after` publishes were made for them."""
    wait_until(lambda: len(publishes(stack, user)) > after, what=f"the home tab of {user}")
    view = stack.slack.published_view(user)
    assert view is not None and view["type"] == "home"
    assert_valid_view(view)
    return view


def text(view: Json) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def buttons(view: Json) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]


def click_on_home(stack: Stack, view: Json, action_id: str, value: str, user: str) -> None:
    status, _ = stack.driver().block_action(action_id, value, user_id=user, channel_id="", message_ts="",
                                           container={"type": "view", "view_id": view["id"]})
    assert status == 200


def test_opening_the_home_tab_publishes_that_members_view_for_that_person_with_its_token(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    pipeline(stack, "FACTS", "SUMMARY", "REPORT: A wins")
    wait_until(lambda: "Approval needed" in json.dumps(stack.slack.posts_by(NOVA["token"])), what="the approval request")

    assert open_home(stack, ANA) == 200
    view = home(stack, ANA)
    [call] = publishes(stack, ANA)
    assert call["token"] == NOVA["token"] and view["bot_id"] == NOVA["bot"]
    shown = text(view)
    assert "Nova — Finance & Admin" in shown and "Active" in shown
    assert "daily-report" in shown and "Every day at 09:00 (Amsterdam time)" in shown and "Next run" in shown
    assert "Waiting for your approval (1)" in shown and "REPORT: A wins" in shown
    assert ("approval.approve", next(v for a, v in buttons(view) if a == "approval.approve")) in buttons(view)
    assert ("workflow.pause", "daily-report") in buttons(view)
    assert "Recent activity" in shown and "Started research-pipeline" in shown and "Your spend" in shown

    # Another member's app, another person: that member's view, with its own token; nothing of Nova's.
    assert open_home(stack, BOB, "casey") == 200
    casey_view = home(stack, BOB)
    [call] = publishes(stack, BOB)
    assert call["token"] == CASEY["token"] and casey_view["bot_id"] == CASEY["bot"]
    assert "Casey — Sales & Leads" in text(casey_view) and "Waiting for your approval (0)" in text(casey_view)
    assert buttons(casey_view) == []

    # The Messages tab announces itself with the same event: no home is drawn for it.
    assert open_home(stack, ANA, tab="messages") == 200
    assert open_home(stack, ANA) == 200
    home(stack, ANA, after=1)
    assert len(publishes(stack, ANA)) == 2


def test_a_click_on_the_home_tab_does_it_and_publishes_the_tab_again(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT: A wins")
    wait_until(lambda: "Approval needed" in json.dumps(stack.slack.posts_by(NOVA["token"])), what="the approval request")
    open_home(stack, ANA)
    view = home(stack, ANA)

    click_on_home(stack, view, "workflow.pause", "daily-report", ANA)
    view = home(stack, ANA, after=1)
    assert ("workflow.resume", "daily-report") in buttons(view) and listed(stack)["status"] == "paused"

    approval = next(v for a, v in buttons(view) if a == "approval.approve")
    click_on_home(stack, view, "approval.approve", approval, ANA)
    view = home(stack, ANA, after=2)
    assert "Waiting for your approval (0)" in text(view) and "approval.approve" not in text(view)
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"

    # Bob may not pause Ana's workflow from his Home either: told privately, his tab redrawn, nothing changed.
    open_home(stack, BOB)
    bob_view = home(stack, BOB)
    assert [a for a, _ in buttons(bob_view)] == []
    click_on_home(stack, bob_view, "workflow.resume", "daily-report", BOB)
    home(stack, BOB, after=1)
    wait_until(lambda: [p for p in stack.slack.all_posts() if "(who set up daily-report) or an admin" in p.get("text", "")],
               what="Bob's refusal, in a DM")
    assert listed(stack)["status"] == "paused"
