"""Every run records where it came from (`runs --json` "origin"), and `runs cancel` stops a run
together with its pending approvals."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.db import Database
from tests.conftest import BOB, NOVA, Stack
from tests.test_workflows import apply, decide, pending_approval, runtime, start, wait_status


def origin(via: str, person: str | None) -> dict[str, Any]:
    return {"via": via, "platform": None, "conversation": None, "thread": None, "person": person}


def runs(stack: Stack) -> list[dict[str, Any]]:
    result = stack.cli("runs", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_a_run_started_as_ana_keeps_her_as_its_origin_through_handoffs_and_events(stack: Stack) -> None:
    stack.up()
    apply(stack, "name: chase\nmember: casey\ntrigger: {manual: {}}\nsteps: [{id: now, tool: current_time}]\n", "chase.yml")
    apply(stack, "name: on-handoff\nmember: casey\ntrigger: {event: {name: member.handoff, member: casey}}\n"
                 "steps: [{id: now, tool: current_time}]\n", "listener.yml")
    apply(stack, "name: hand-over\nmember: nova\ntrigger: {manual: {}}\n"
                 "steps: [{id: pass, handoff: {member: casey, workflow: chase, message: 'Please chase 2041'}}]\n", "parent.yml")
    result = stack.cli("workflow", "run", "hand-over", "--as", "ana")
    assert result.returncode == 0, result.stderr
    parent = result.stdout.strip()
    done = wait_status(stack, parent, "completed")
    assert done["origin"] == origin("cli", "ana")
    child = done["steps"][0]["output"]["run_id"]
    wait_status(stack, child, "completed")
    by_workflow = {r["workflow"]: r for r in runs(stack)}
    assert by_workflow["chase"]["origin"] == origin("handoff", "ana")
    assert by_workflow["on-handoff"]["origin"] == origin("event", "ana")

    listing = stack.cli("runs", "--workflow", "hand-over")
    assert listing.returncode == 0, listing.stderr
    assert f"{parent}  hand-over v1  completed" in listing.stdout and "from cli ana" in listing.stdout

    # without --as: still from the CLI, nobody in particular; an unknown person is one line
    assert wait_status(stack, start(stack, "chase"), "completed")["origin"] == origin("cli", None)
    refused = stack.cli("workflow", "run", "chase", "--as", "nobody")
    assert refused.returncode == 2 and "--as: unknown person 'nobody'" in refused.stderr and "Traceback" not in refused.stderr


def test_a_scheduled_run_comes_from_the_workflows_creator(stack: Stack) -> None:
    schedule = 'trigger: {schedule: "0 9 * * *", timezone: Europe/Amsterdam}\nsteps: [{id: now, tool: current_time}]\n'
    (stack.workdir / "mine.yml").write_text(f"name: mine\nmember: nova\n{schedule}")
    result = stack.cli("workflow", "apply", "--as", BOB, "mine.yml")
    assert result.returncode == 0, result.stderr
    apply(stack, f"name: nobodys\nmember: nova\n{schedule}", "nobodys.yml")  # no --as: the first admin (ana)
    slot = int((datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0).timestamp())

    async def fire_both() -> None:
        from jobs import schedules
        from storage import workflows as store

        rt = runtime(stack)
        try:
            for name in ("mine", "nobodys"):
                async with rt.db.session() as session:
                    row = await store.by_name(session, name)
                    assert row is not None
                assert (await schedules.fire(rt, row.id, slot)).startswith("started")
        finally:
            await rt.db.close()

    asyncio.run(fire_both())
    by_workflow = {r["workflow"]: r for r in runs(stack)}
    assert by_workflow["mine"]["origin"] == origin("schedule", BOB)
    assert by_workflow["nobodys"]["origin"] == origin("schedule", "ana")


def test_cancelling_a_run_waiting_at_an_approval_cancels_the_approval(stack: Stack) -> None:
    stack.up()
    apply(stack, """
name: ask-first
member: nova
trigger: {manual: {}}
steps:
  - id: ask
    approval: {message: "Send it?", show: "Dear client", timeout: 1h}
  - id: send
    post: {channel: C0GENERAL1, text: "{{ steps.ask.content }}"}
""")
    run_id = start(stack, "ask-first")
    approval = pending_approval(stack, run_id)
    wait_status(stack, run_id, "waiting")

    result = stack.cli("runs", "cancel", run_id, "--as", "ana")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{run_id}: cancelled (1 pending approval(s) cancelled: {approval})"
    run = wait_status(stack, run_id, "cancelled")
    assert [(s["id"], s["status"]) for s in run["steps"]] == [("ask", "cancelled")]

    async def stored() -> tuple[str, str | None, str | None, list[str]]:
        from sqlalchemy import select

        from storage import approvals
        from storage.models import Activity

        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                row = await approvals.get(session, approval)
                assert row is not None
                actions = list((await session.execute(
                    select(Activity.action).where(Activity.entity_id == approval).order_by(Activity.id))).scalars())
                return row.status, row.decided_by, row.reason, actions
        finally:
            await db.close()

    assert asyncio.run(stored()) == ("cancelled", "ana", "run cancelled", ["approval_requested", "approval_cancelled"])
    assert not decide(stack, approval, "approved")  # too late: the run is gone
    assert [r["status"] for r in runs(stack) if r["id"] == run_id] == ["cancelled"]
    [request] = stack.slack.posts_by(NOVA["token"])  # only the approval request, asked in a DM
    assert "Cancelled" in json.dumps(request["blocks"]) and "approval.approve" not in json.dumps(request["blocks"])
    again = stack.cli("runs", "cancel", run_id)
    assert again.returncode == 2 and f"run {run_id} is already cancelled" in again.stderr
    unknown = stack.cli("runs", "cancel", "nosuchrun")
    assert unknown.returncode == 2 and "no run 'nosuchrun'" in unknown.stderr


def test_an_origin_is_always_the_five_keys_and_passes_on_to_the_runs_it_starts() -> None:
    from jobs.runs.origin import Origin

    chat = Origin(via="chat", platform="slack", conversation="C0GENERAL1", thread="1712.0001", person="U0ANA0001")
    assert Origin.from_json(chat.to_json()) == chat
    assert list(chat.to_json()) == ["via", "platform", "conversation", "thread", "person"]
    assert Origin.inherited(chat, "handoff").to_json() == {**chat.to_json(), "via": "handoff"}
    assert Origin.inherited(None, "event").to_json() == origin("event", None)
    assert Origin.from_json(None) is None
    assert chat.describe() == "chat slack C0GENERAL1 U0ANA0001"
    for bad in ({"via": "fax"}, {"via": "cli", "person": 7}, ["cli"]):
        try:
            Origin.from_json(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
