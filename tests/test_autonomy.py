"""Autonomy enforced in code, end to end: `workflow apply` refuses what the member's level does
not allow, the engine stops an effect that no approved approval covers (a post step, a tool
call of an agent step), and in a conversation a post outside it waits for the person's click.
Real web and worker processes, real Redis, the Slack and Anthropic fakes over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import ANA, BOB, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_approvals import button, status_line
from tests.test_turns import activity_rows
from tests.test_workflows import decide, pending_approval, start, wait_status

Json = dict[str, Any]
CLIENTS = "C0CLIENTS1"  # a channel outside the team: not the origin, not a team channel


def with_clients_channel(stack: Stack) -> None:
    stack.slack.add_channel(CLIENTS, "clients", [ANA, NOVA["user"]])


def apply_as(stack: Stack, name: str, text: str, *as_person: str) -> tuple[int, str]:
    (stack.workdir / name).write_text(text)
    result = stack.cli("workflow", "apply", name, *(("--as", as_person[0]) if as_person else ()))
    return result.returncode, result.stderr.strip()


REMINDERS = f"""\
name: payment-reminders
member: nova
trigger: {{manual: {{}}}}
{{autonomy}}
steps:
  - id: remind
    foreach: "{{{{ [1, 2] }}}}"
    steps:
      - id: draft
        tool: current_time
{{approval}}
      - id: send
        post: {{channel: {CLIENTS}, text: "Reminder {{{{ item }}}}"}}
"""
APPROVAL = "      - {id: ok, approval: {message: Send this reminder}}"


def reminders(autonomy: str = "", approval: str = "") -> str:
    return REMINDERS.replace("{autonomy}", autonomy).replace("{approval}", approval)


def test_apply_refuses_effects_the_autonomy_does_not_allow_and_auto_from_a_non_admin(stack: Stack) -> None:
    # approve (the member's default): a post outside the team needs an approval on its path.
    code, err = apply_as(stack, "payment-reminders.yml", reminders())
    assert code != 0
    assert err == ("teammates: payment-reminders.yml: steps[remind].steps[send]: 'send' sends outside the team "
                   f"(post to {CLIENTS}); add an approval before 'send', or ask an admin for autonomy: auto")
    # notify: the member only reports, an approval does not make it an effect it may do.
    code, err = apply_as(stack, "payment-reminders.yml", reminders("autonomy: notify", APPROVAL))
    assert code != 0 and "steps[remind].steps[send]: 'send' sends outside the team" in err and "autonomy is notify" in err
    # auto: only an admin may set it.
    code, err = apply_as(stack, "payment-reminders.yml", reminders("autonomy: auto"), BOB)
    assert code != 0
    assert err.startswith("teammates: payment-reminders.yml: autonomy: only an admin may set autonomy: auto")
    assert stack.cli("workflow", "list", "--json").stdout.strip() == "[]"  # nothing was stored
    assert apply_as(stack, "payment-reminders.yml", reminders("autonomy: auto"), "ana") == (0, "")
    # An approval before it on its path (inside the foreach) is what `approve` asks for.
    assert apply_as(stack, "payment-reminders.yml", reminders("autonomy: approve", APPROVAL), BOB) == (0, "")
    # Posts into the team's own channels (a member's activity or approvals channel) stay inside the team.
    team = f"name: feed\nmember: nova\ntrigger: {{manual: {{}}}}\nsteps:\n  - {{id: tell, post: {{channel: {GENERAL}, text: hi}}}}\n"
    assert apply_as(stack, "feed.yml", team, BOB) == (0, "")
    listed = {w["name"]: w["version"] for w in json.loads(stack.cli("workflow", "list", "--json").stdout)}
    assert listed == {"payment-reminders": 2, "feed": 1}


ASKED = f"""\
name: announce
member: nova
trigger: {{manual: {{}}}}
inputs: [{{name: ask, type: boolean, default: true}}]
steps:
  - id: ok
    when: "{{{{ inputs.ask }}}}"
    approval: {{message: Tell the clients}}
  - id: send
    post: {{channel: {CLIENTS}, text: "Offices closed on Friday"}}
"""


def test_the_engine_stops_a_post_outside_the_team_whose_approval_was_skipped(stack: Stack) -> None:
    with_clients_channel(stack)
    stack.up()
    assert apply_as(stack, "announce.yml", ASKED) == (0, "")
    skipped = start(stack, "announce", "ask=false")
    run = wait_status(stack, skipped, "completed", "failed")
    assert run["status"] == "failed"
    send = next(s for s in run["steps"] if s["id"] == "send")
    assert send["status"] == "failed" and "stopped: it sends outside the team (post to C0CLIENTS1)" in send["error"]
    assert "no approval before it was approved" in send["error"]
    assert any("announce: send failed: " in row["description"] for row in activity_rows(stack, "step_failed"))
    assert stack.slack.messages(CLIENTS) == []
    # The same step after an approval that was approved: it posts, once.
    approved = start(stack, "announce", "ask=true")
    assert decide(stack, pending_approval(stack, approved), "approved")
    assert wait_status(stack, approved, "completed", "failed")["status"] == "completed"
    assert [m["text"] for m in stack.slack.messages(CLIENTS)] == ["Offices closed on Friday"]
    # Under `auto` (set by an admin) the member acts on its own: no approval needed.
    assert apply_as(stack, "blast.yml", f"name: blast\nmember: nova\nautonomy: auto\ntrigger: {{manual: {{}}}}\nsteps:\n"
                    f"  - {{id: send, post: {{channel: {CLIENTS}, text: On our own}}}}\n") == (0, "")
    assert wait_status(stack, start(stack, "blast"), "completed", "failed")["status"] == "completed"
    assert [m["text"] for m in stack.slack.messages(CLIENTS)] == ["Offices closed on Friday", "On our own"]


def test_an_agent_step_without_an_approval_cannot_post_outside_the_team(stack: Stack) -> None:
    with_clients_channel(stack)
    stack.up()
    stack.llm.script(Reply(tool_uses=[{"name": "post_message", "input": {"channel": CLIENTS, "text": "Pay now please"}}]),
                     Reply(text="I could not send it."))
    assert apply_as(stack, "chase.yml", "name: chase\nmember: nova\ntrigger: {manual: {}}\nsteps:\n"
                    "  - {id: write, agent: nova, prompt: Chase the client}\n") == (0, "")
    run = wait_status(stack, start(stack, "chase"), "completed", "failed")
    assert run["status"] == "completed" and run["steps"][0]["output"] == "I could not send it."
    result = stack.llm.requests[1]["body"]["messages"][-1]["content"][0]
    assert result["is_error"] is True and "needs approval" in result["content"]
    [stopped] = activity_rows(stack, "effect_stopped")
    assert "chase: write: stopped post to C0CLIENTS1" in stopped["description"]
    assert stack.slack.messages(CLIENTS) == []
    # After an approval that was approved, the same call goes through.
    stack.llm.script(Reply(tool_uses=[{"name": "post_message", "input": {"channel": CLIENTS, "text": "Approved chase"}}]),
                     Reply(text="Sent."))
    assert apply_as(stack, "chase.yml", "name: chase\nmember: nova\ntrigger: {manual: {}}\nsteps:\n"
                    "  - {id: ok, approval: {message: Chase them}}\n"
                    "  - {id: write, agent: nova, prompt: Chase the client}\n") == (0, "")
    approved = start(stack, "chase")
    assert decide(stack, pending_approval(stack, approved), "approved")
    assert wait_status(stack, approved, "completed", "failed")["status"] == "completed"
    assert [m["text"] for m in stack.slack.messages(CLIENTS)] == ["Approved chase"]
    assert len(activity_rows(stack, "effect_stopped")) == 1


def nova_cards(stack: Stack) -> list[Json]:
    return [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM and "wants to post" in p.get("text", "")]


def click(stack: Stack, card: Json, action_id: str, user: str) -> None:
    status, _ = stack.driver().block_action(action_id, button(card, action_id), user_id=user, channel_id=card["channel"],
                                           message_ts=card["ts"])
    assert status == 200


def test_post_message_elsewhere_from_a_dm_asks_first_and_posts_once_after_the_persons_ok(stack: Stack) -> None:
    with_clients_channel(stack)
    stack.up()
    stack.llm.script(Reply(tool_uses=[{"name": "post_message", "input": {"channel": f"<#{CLIENTS}|clients>", "text": "Invoices are due Friday."}}]),
                     Reply(text="I need your OK first: press Post it."))
    stack.driver().dm(ANA, "Tell the clients invoices are due Friday", channel=NOVA_DM)
    [card] = wait_until(lambda: nova_cards(stack), what="the confirmation card")
    assert "Invoices are due Friday." in json.dumps(card["blocks"])
    wait_until(lambda: any(p.get("text") == "I need your OK first: press Post it." for p in stack.slack.posts_by(NOVA["token"])),
               what="the reply")
    waiting = stack.llm.requests[1]["body"]["messages"][-1]["content"][0]
    assert not waiting.get("is_error") and "confirm" in waiting["content"]
    assert stack.slack.messages(CLIENTS) == []

    stack.slack.add_member(NOVA_DM, BOB)  # so Bob's notice reaches him where he clicked
    click(stack, card, "effect.confirm", BOB)
    notice = wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == BOB], what="Bob's private notice")
    assert "Only" in notice[0]["text"] and "admin" in notice[0]["text"]
    assert stack.slack.messages(CLIENTS) == []

    click(stack, card, "effect.confirm", ANA)
    wait_until(lambda: stack.slack.messages(CLIENTS), what="the post after Ana's OK")
    [updated] = wait_until(lambda: [c for c in nova_cards(stack) if "Posted" in status_line(c)], what="the updated card")
    assert f"<@{ANA}>" in status_line(updated) and "effect.confirm" not in json.dumps(updated["blocks"])
    click(stack, card, "effect.confirm", ANA)  # a second click: told privately, nothing posted again
    wait_until(lambda: [e for e in stack.slack.ephemerals(NOVA_DM) if e["user"] == ANA], what="Ana's notice")
    time.sleep(1)
    assert [m["text"] for m in stack.slack.messages(CLIENTS)] == ["Invoices are due Friday."]
    assert len(activity_rows(stack, "effect_confirmed")) == 1
    # The conversation keeps the outcome: Nova's next turn knows the post went out.
    stack.llm.script(Reply(text="Yes, it went out."))
    stack.driver().dm(ANA, "Did it go out?", channel=NOVA_DM)
    wait_until(lambda: len(stack.llm.requests) >= 3, what="the next turn")
    assert "Posted by" in json.dumps(stack.llm.requests[2]["body"]["messages"])
    # "Don't": nothing is posted, and the card says so.
    stack.llm.script(Reply(tool_uses=[{"name": "post_message", "input": {"channel": CLIENTS, "text": "Second notice"}}]),
                     Reply(text="Waiting for your OK."))
    stack.driver().dm(ANA, "And send a second notice", channel=NOVA_DM)
    second = wait_until(lambda: [c for c in nova_cards(stack) if "Second notice" in json.dumps(c["blocks"])], what="the second card")[0]
    click(stack, second, "effect.decline", ANA)
    wait_until(lambda: [c for c in nova_cards(stack) if "said no" in status_line(c)], what="the declined card")
    time.sleep(1)
    assert [m["text"] for m in stack.slack.messages(CLIENTS)] == ["Invoices are due Friday."]


def test_a_notify_member_refuses_effects_in_conversations(stack: Stack) -> None:
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace("    tools: [get_thread_history, lookup_user, post_message]\n",
                                                "    tools: [get_thread_history, lookup_user, post_message]\n    autonomy: notify\n"))
    with_clients_channel(stack)
    stack.up()
    stack.llm.script(Reply(tool_uses=[{"name": "post_message", "input": {"channel": CLIENTS, "text": "Hello clients"}}]),
                     Reply(text="I only report."))
    stack.driver().dm(ANA, "Tell the clients hello", channel=NOVA_DM)
    wait_until(lambda: any(p.get("text") == "I only report." for p in stack.slack.posts_by(NOVA["token"])), what="the reply")
    refused = stack.llm.requests[1]["body"]["messages"][-1]["content"][0]
    assert refused["is_error"] is True and "autonomy is notify" in refused["content"]
    assert stack.slack.messages(CLIENTS) == [] and nova_cards(stack) == []
