"""The member's slash command over signed HTTP: every subcommand as an admin and as a
non-admin, answered privately (an ephemeral message) with blocks Slack's own models accept;
pause and resume end to end (DMs answered "paused" without the LLM, scheduled slots skipped,
manual runs refused, and all of it restored by resume); the workflows' buttons."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import ANA, BOB, CONFIG, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_approvals import assert_valid_blocks, assert_valid_view, button
from tests.test_seed_story import arrive
from tests.test_workflows import apply, run_json, start, wait_status

Json = dict[str, Any]

DAILY = """\
name: daily-report
member: nova
description: Post the daily report
trigger: {schedule: "0 9 * * *", timezone: Europe/Amsterdam}
autonomy: notify
steps:
  - id: say
    post: {channel: C0GENERAL1, text: "Daily report"}
"""


BROKEN = """\
name: broken
member: nova
trigger: {manual: {}}
autonomy: auto
steps:
  - id: announce
    post: {channel: C0GENERAL1, text: "Hello"}
  - id: report
    post: {channel: C0NOWHERE1, text: "Report"}
"""


def answers(stack: Stack, user: str, channel: str = GENERAL) -> list[Json]:
    return [e for e in stack.slack.ephemerals(channel) if e["user"] == user and e["token"] == NOVA["token"]]


def command(stack: Stack, text: str, user: str, channel: str = GENERAL) -> Json:
    """Type `/nova <text>`; the private answer that comes back (its blocks checked valid)."""
    before = len(answers(stack, user, channel))
    started = time.monotonic()
    status, body = stack.driver().slash_command("/nova", text, user_id=user, channel_id=channel)
    assert status == 200 and time.monotonic() - started < 3, (status, body)
    found = wait_until(lambda: answers(stack, user, channel)[before:], what=f"the answer to /nova {text}")
    assert len(found) == 1, found
    answer = found[0]
    assert_valid_blocks(answer["blocks"])
    return answer


def shown(answer: Json) -> str:
    return json.dumps(answer["blocks"], ensure_ascii=False)


def actions(answer: Json) -> list[str]:
    return [e["action_id"] for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]]


def member_status(stack: Stack) -> str:
    fields = [b["fields"] for b in command(stack, "status", ANA)["blocks"] if b.get("fields")][0]  # the member's own card
    return str(fields[1]["text"])


def test_every_subcommand_as_an_admin(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    assert "/nova status" in shown(command(stack, "help", ANA)) and "/nova pause" in shown(command(stack, "help", ANA))
    status = shown(command(stack, "status", ANA))
    assert "Nova — Finance & Admin" in status and "Active" in status and "Workflows active" in status
    assert "Last 30 days" in status and "0 done, 0 failed" in status and "0 asked" in status  # seed 003's figures
    workflows = command(stack, "workflows", ANA)
    assert "daily-report" in shown(workflows) and "Every day at 09:00 (Amsterdam time)" in shown(workflows) and "Next run" in shown(workflows)
    assert actions(workflows) == ["workflow.pause", "workflow.run"]  # Ana is an admin (and its creator)
    assert "has not run yet" in shown(command(stack, "runs daily-report", ANA))
    apply(stack, BROKEN, "broken.yml")
    run_id = start(stack, "broken")
    wait_status(stack, run_id, "failed")
    runs = shown(command(stack, "runs broken", ANA))
    assert f"Run {run_id}" in runs and "failed" in runs and "Failed steps" in runs and "`report`" in runs
    assert "channel_not_found" in runs or "not_in_channel" in runs, runs
    assert "Which one?" in shown(command(stack, "runs", ANA)) and "daily-report" in shown(command(stack, "runs nope", ANA))
    assert "Nothing waits for your approval" in shown(command(stack, "approvals", ANA))
    assert "What Nova did lately" in shown(command(stack, "activity", ANA))
    assert "tokens" in shown(command(stack, "usage", ANA))
    team = shown(command(stack, "team", ANA))
    assert "Nova — Finance & Admin" in team and "Casey — Sales & Leads" in team
    status, _ = stack.driver().slash_command("/nova", "config", user_id=ANA, channel_id=GENERAL)
    assert status == 200
    [form] = wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the settings form")
    assert form["callback_id"] == "member.config" and "Finance & Admin" in json.dumps(form["blocks"])
    assert_valid_view(form)
    assert "I don't know `/nova frobnicate`" in shown(command(stack, "frobnicate", ANA))
    assert "is paused" in shown(command(stack, "pause", ANA))
    assert "Paused by <@U0ANA00001>" in member_status(stack)
    assert "is back" in shown(command(stack, "resume", ANA))
    assert "Active" in member_status(stack)


def command_form(stack: Stack, user: str) -> bool:
    """`/nova config` is answered in the request itself (it opens a form with the command's
    short-lived trigger), for a non-admin with a private sentence."""
    before = len(answers(stack, user))
    status, _ = stack.driver().slash_command("/nova", "config", user_id=user, channel_id=GENERAL)
    assert status == 200
    return bool(wait_until(lambda: answers(stack, user)[before:], what="the answer to /nova config"))


def test_every_subcommand_as_a_non_admin(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    helped = shown(command(stack, "help", BOB))
    assert "/nova status" in helped and "/nova pause" not in helped
    assert "Nova — Finance & Admin" in shown(command(stack, "status", BOB))
    workflows = command(stack, "workflows", BOB)
    assert "daily-report" in shown(workflows) and actions(workflows) == []  # not its creator, not an admin
    assert "has not run yet" in shown(command(stack, "runs daily-report", BOB))
    assert "Nothing waits for your approval" in shown(command(stack, "approvals", BOB))
    assert "What Nova did lately" in shown(command(stack, "activity", BOB))
    assert "You (with every member)" in shown(command(stack, "usage", BOB))
    for sub in ("pause", "resume", "team"):
        assert f"Only an admin can use `/nova {sub}`" in shown(command(stack, sub, BOB))
    command_form(stack, BOB)
    assert "Only an admin can use `/nova config`" in answers(stack, BOB)[-1]["text"]
    assert "help" in shown(command(stack, "what", BOB))
    assert "Active" in member_status(stack)  # nothing changed


def dm_replies(stack: Stack) -> list[str]:
    return [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM]


def llm_calls(stack: Stack) -> int:
    return len([r for r in stack.llm.requests if r.path == "/v1/messages"])


def test_pause_stops_workflows_and_dms_answer_paused_and_resume_restores_both(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    assert "is paused" in shown(command(stack, "pause", ANA))

    stack.driver().dm(ANA, "Hi Nova, any overdue invoices?", channel=NOVA_DM)
    [reply] = wait_until(lambda: dm_replies(stack), what="the paused answer")
    assert reply.startswith(f"Nova is paused (by <@{ANA}> since ") and reply.endswith("an admin can resume it with /nova resume")
    assert llm_calls(stack) == 0
    _, slot = arrive(stack)  # 09:00 comes while Nova is paused
    skipped = wait_until(lambda: [r for r in json.loads(stack.cli("runs", "--json").stdout) if r["status"] == "skipped"],
                         what="the skipped slot")
    assert len(skipped) == 1 and "Nova is paused" in run_error(stack, skipped[0]["id"])
    refused = stack.cli("workflow", "run", "daily-report")
    assert refused.returncode != 0 and "Nova is paused" in refused.stderr
    assert not [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL and p["text"] == "Daily report"]

    assert "is back" in shown(command(stack, "resume", ANA))
    stack.llm.script(Reply(text="None today."))
    stack.driver().dm(ANA, "And now?", channel=NOVA_DM)
    wait_until(lambda: "None today." in dm_replies(stack), what="a real answer")
    stack.llm.wait_for_requests(1)
    _, next_slot = arrive(stack)  # the next slot was kept queued: it fires
    assert next_slot > slot
    wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == GENERAL and p["text"] == "Daily report"],
               what="the report of the next slot")
    activity = shown(command(stack, "activity", ANA))
    assert "ana paused Nova" in activity and "ana resumed Nova" in activity


def run_error(stack: Stack, run_id: str) -> str:
    import asyncio

    from storage import workflows as store
    from storage.db import Database

    async def read() -> str:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                run = await store.run(session, run_id)
                return run.error or "" if run else ""
        finally:
            await db.close()

    return asyncio.run(read())


def click(stack: Stack, answer: Json, action_id: str, user: str) -> None:
    status, _ = stack.driver().block_action(action_id, button(answer, action_id), user_id=user, channel_id=answer["channel"],
                                           message_ts=answer["ts"])
    assert status == 200


def test_the_workflow_buttons_run_pause_and_resume_for_its_creator_or_an_admin_only(stack: Stack) -> None:
    stack.up()
    apply(stack, DAILY)
    workflows = command(stack, "workflows", ANA)

    before = len(answers(stack, BOB))
    click(stack, workflows, "workflow.pause", BOB)  # Bob sees no buttons; a forged click changes nothing
    [refusal] = wait_until(lambda: answers(stack, BOB)[before:], what="Bob's refusal")
    assert f"Only <@{ANA}> (who set up daily-report) or an admin can pause it." == refusal["text"]

    before = len(answers(stack, ANA))
    click(stack, workflows, "workflow.run", ANA)
    [started] = wait_until(lambda: answers(stack, ANA)[before:], what="Run now's answer")
    run_id = started["text"].rsplit("run ", 1)[1].rstrip(").")
    assert wait_status(stack, run_id, "completed")["status"] == "completed"
    assert run_json(stack, run_id)["origin"]["person"] == "ana"

    click(stack, workflows, "workflow.pause", ANA)
    wait_until(lambda: listed(stack)["status"] == "paused", what="paused")
    assert listed(stack)["next_run"] is None
    assert actions(command(stack, "workflows", ANA)) == ["workflow.resume", "workflow.run"]
    click(stack, command(stack, "workflows", ANA), "workflow.resume", ANA)
    wait_until(lambda: listed(stack)["status"] == "active", what="active again")
    assert listed(stack)["next_run"] is not None


def listed(stack: Stack, name: str = "daily-report") -> Json:
    """The workflow as `teammates workflow list --json` shows it."""
    return dict(next(w for w in json.loads(stack.cli("workflow", "list", "--json").stdout) if w["name"] == name))


def test_workspace_admins_are_admins_only_when_the_config_says_so(stack: Stack) -> None:
    stack.slack.add_user(BOB, "bob", real_name="Bob Jansen", email="bob@acme.test", is_admin=True)
    stack.up()
    assert "Only an admin" in shown(command(stack, "team", BOB))
    stack.kill_all()
    (stack.workdir / "teammates.yml").write_text(CONFIG.replace("server: {", "slack: {admins_from_workspace: true}\nserver: {", 1))
    stack.up()
    assert "Casey — Sales & Leads" in shown(command(stack, "team", BOB))
    status, _ = stack.driver().slash_command("/nova", "config", user_id=BOB, channel_id=GENERAL)
    assert status == 200  # the settings form opens for a workspace admin too
    wait_until(lambda: [v for v in stack.slack.views() if v["type"] == "modal"], what="the settings form for Bob")


def test_a_paused_members_workflows_refuse_run_now_and_webhooks_clearly_until_resumed(stack: Stack) -> None:
    from tests.test_webhooks import HOOK, SECRET, headers, post

    stack.env["HOOK_SECRET"] = SECRET.decode()
    stack.up()
    apply(stack, DAILY)
    apply(stack, HOOK, "hook.yml")
    workflows = command(stack, "workflows", ANA)
    command(stack, "pause", ANA)

    before = len(answers(stack, ANA))
    click(stack, workflows, "workflow.run", ANA)
    [refusal] = wait_until(lambda: answers(stack, ANA)[before:], what="Run now's refusal")
    assert refusal["text"].startswith(f"daily-report does not run: Nova is paused (by <@{ANA}> since ")
    body = json.dumps({"who": "Acme"}).encode()
    status, answer = post(stack, "intake", body, headers(body, "delivery-0001"))
    assert status == 409 and str(answer["error"]).startswith("Nova is paused (by ana since ")
    assert json.loads(stack.cli("runs", "--json").stdout) == []

    command(stack, "resume", ANA)
    status, answer = post(stack, "intake", body, headers(body, "delivery-0002"))
    assert status == 202, answer
    assert wait_status(stack, str(answer["run_id"]), "completed")["status"] == "completed"


def test_a_members_slash_command_defaults_to_its_id_and_must_start_with_a_slash(tmp_path: Any) -> None:
    import pytest

    from teammates.config import ConfigError, load

    path = tmp_path / "teammates.yml"
    path.write_text("members:\n  - {id: nova, name: Nova, role: Finance}\n  - {id: casey, name: Casey, role: Sales, slash_command: /sales}\n")
    config = load(str(path), env={}).config
    assert [m.command for m in config.members] == ["/nova", "/sales"]
    path.write_text("members:\n  - {id: nova, name: Nova, role: Finance, slash_command: nova}\n")
    with pytest.raises(ConfigError, match="slash_command") as error:
        load(str(path), env={})
    assert "'/'" in str(error.value) and "\n" not in str(error.value)


def test_a_command_typed_where_the_member_is_not_answers_in_a_dm(stack: Stack) -> None:
    stack.slack.add_channel("C0SALES001", "sales", [ANA, BOB])  # Nova is not in it: no ephemeral can reach Ana there
    stack.up()
    status, _ = stack.driver().slash_command("/nova", "status", user_id=ANA, channel_id="C0SALES001")
    assert status == 200
    [answer] = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"]) if p["channel"] == NOVA_DM], what="a DM")
    assert "Nova — Finance & Admin" in shown(answer)
    assert_valid_blocks(answer["blocks"])


def test_approvals_shows_the_viewers_pending_requests_with_buttons_that_decide_them(stack: Stack) -> None:
    from tests.test_approvals import pipeline

    stack.up()
    run_id = pipeline(stack, "FACTS", "SUMMARY", "REPORT: A wins")
    wait_until(lambda: "Approval needed" in json.dumps(stack.slack.posts_by(NOVA["token"])), what="the approval request")
    assert "Nothing waits for your approval" in shown(command(stack, "approvals", BOB))  # not an approver of it
    mine = command(stack, "approvals", ANA)
    assert "1 waiting for your approval" in shown(mine) and "REPORT: A wins" in shown(mine)
    assert actions(mine) == ["approval.approve", "approval.reject", "approval.edit"]
    click(stack, mine, "approval.approve", ANA)
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    assert "Nothing waits for your approval" in shown(command(stack, "approvals", ANA))


def test_a_run_now_asked_again_after_a_crash_starts_no_second_run(stack: Stack) -> None:
    """The job that does a Run now click may die after the run started and before the click is
    marked done; the sweeper then runs it again. The click's key is stored with the run."""
    import asyncio

    import redis as redis_lib

    from jobs.runs.start import start_run
    from storage.db import Database

    stack.up()
    apply(stack, DAILY)

    async def twice() -> list[str | None]:
        db = Database(stack.env["DATABASE_URL"])
        client = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
        try:
            return [await start_run(db, client, "daily-report", "manual", {}, once="click-abc") for _ in range(2)]
        finally:
            client.close()
            await db.close()

    first, again = asyncio.run(twice())
    assert first is not None and again == first
    listed = json.loads(stack.cli("runs", "--workflow", "daily-report", "--json").stdout)
    assert [r["id"] for r in listed] == [first]
