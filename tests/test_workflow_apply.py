"""`teammates workflow apply FILE...` and `workflow delete`: every check in one core apply,
handoff loops refused when they can be seen and stopped at run time when they cannot, and
workflow agent steps metered per member, workflow and run."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import select, update

from storage.db import Database
from storage.models import Activity, LlmUsage, Workflow, WorkflowRun, WorkflowVersion
from tests.conftest import Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_workflows import start, wait_status


def write(stack: Stack, name: str, text: str) -> str:
    (stack.workdir / name).write_text(text)
    return name


def refused(stack: Stack, *files: str) -> str:
    result = stack.cli("workflow", "apply", *files)
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    return line.removeprefix("teammates: ")


def names(stack: Stack) -> list[str]:
    result = stack.cli("workflow", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [w["name"] for w in json.loads(result.stdout)]


def query(stack: Stack, statement: Any) -> list[Any]:
    async def go() -> list[Any]:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return list((await session.execute(statement)).all())
        finally:
            await db.close()

    return asyncio.run(go())


MANUAL = "trigger: {manual: {}}\n"


def test_apply_refuses_a_self_handoff_and_a_loop_across_files_storing_nothing(stack: Stack) -> None:
    write(stack, "self.yml", "name: again\nmember: nova\n" + MANUAL +
          "steps: [{id: loop, handoff: {member: nova, workflow: again}}]\n")
    line = refused(stack, "self.yml")
    assert line.startswith("self.yml: steps[loop].handoff: a handoff loop: again → again")

    # ping hands off to casey; pong listens for casey's handoffs and hands back to ping.
    write(stack, "ping.yml", "name: ping\nmember: nova\n" + MANUAL +
          "steps: [{id: pass, handoff: {member: casey, message: hi}}]\n")
    write(stack, "pong.yml", "name: pong\nmember: casey\ntrigger: {event: {name: member.handoff, member: casey}}\n"
          "steps: [{id: back, handoff: {member: nova, workflow: ping}}]\n")
    line = refused(stack, "ping.yml", "pong.yml")
    assert "a handoff loop: ping → pong (by step pass of ping) → ping (by step back of pong)" in line
    assert names(stack) == []  # all or nothing

    # One at a time, the loop is seen against the stored workflow as well.
    assert stack.cli("workflow", "apply", "ping.yml").returncode == 0
    assert "a handoff loop" in refused(stack, "pong.yml")
    assert names(stack) == ["ping"]


def test_apply_checks_members_tools_and_template_variables_it_can_know(stack: Stack) -> None:
    def check(steps: str, inputs: str = "") -> str:
        write(stack, "wf.yml", "name: wf\nmember: nova\n" + MANUAL + inputs + "steps:\n" + steps)
        return refused(stack, "wf.yml")

    assert "steps[draft].agent: no member 'zed'" in check("  - {id: draft, agent: zed, prompt: hi}\n")
    assert "steps[pass].handoff.member: no member 'zed'" in check("  - {id: pass, handoff: {member: zed}}\n")
    assert "steps[t].tool: unknown tool 'send_fax'" in check("  - {id: t, tool: send_fax}\n")
    assert "steps[d].tools: casey does not have the tool 'post_message'" in check(
        "  - {id: d, agent: casey, prompt: hi, tools: [post_message]}\n")
    assert "steps[p].handoff.workflow: no workflow named 'nope'" in check(
        "  - {id: p, handoff: {member: casey, workflow: nope}}\n")
    line = check("  - {id: a, post: {channel: C1, text: '{{ steps.b.output }}'}}\n  - {id: b, tool: current_time}\n")
    assert "steps[a].post.text: 'steps.b.output' is not known here: step 'b' has not run by then" in line
    assert "no step 'nope'" in check("  - {id: a, post: {channel: C1, text: '{{ steps.nope.output }}'}}\n")
    line = check("  - {id: a, tool: current_time}\n  - {id: b, post: {channel: C1, text: '{{ steps.a.outptu }}'}}\n")
    assert "steps[b].post.text: unknown variable 'steps.a.outptu'" in line
    line = check("  - {id: a, post: {channel: C1, text: '{{ inputs.dayz }}'}}\n", "inputs: [{name: days, type: integer, default: 7}]\n")
    assert "steps[a].post.text: unknown variable 'inputs.dayz': no input 'dayz'" in line
    assert "unknown variable 'item'" in check("  - {id: a, post: {channel: C1, text: '{{ item.client }}'}}\n")
    # What a run can read passes: earlier steps, a foreach's item, a loop's own names.
    write(stack, "ok.yml", "name: ok\nmember: nova\nautonomy: auto\n" + MANUAL + """\
steps:
  - id: find
    tool: current_time
  - id: each
    foreach: "{{ [1, 2] }}"
    steps:
      - {id: say, post: {channel: C1, text: "{{ item }} {{ loop.index }} {{ steps.find.output }}"}}
      - {id: again, post: {channel: C1, text: "{% for x in [1] %}{{ x }}{% endfor %}{{ steps.say.output }}"}}
  - {id: done, post: {channel: C1, text: "{{ steps.each.output }} {{ run.id }}"}}
""")
    result = stack.cli("workflow", "apply", "ok.yml")
    assert result.returncode == 0, result.stderr


def test_apply_takes_several_files_keeps_the_member_and_delete_stops_runs_and_schedules(stack: Stack) -> None:
    write(stack, "chase.yml", "name: chase\nmember: casey\n" + MANUAL + "steps: [{id: now, tool: current_time}]\n")
    write(stack, "hand.yml", "name: hand\nmember: nova\n" + MANUAL +
          "steps: [{id: pass, handoff: {member: casey, workflow: chase}}]\n")
    result = stack.cli("workflow", "apply", "hand.yml", "chase.yml")  # a handoff target in the same command
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hand: active version 1", "chase: active version 1"]

    write(stack, "moved.yml", "name: chase\nmember: nova\n" + MANUAL + "steps: [{id: now, tool: current_time}]\n")
    line = refused(stack, "moved.yml")
    assert "member: workflow 'chase' belongs to casey" in line and "workflow delete chase" in line

    deleting = stack.cli("workflow", "delete", "chase")
    assert deleting.returncode == 2 and "workflow 'hand' hands off to it" in deleting.stderr
    assert stack.cli("workflow", "delete", "hand").returncode == 0

    # A run that is still going: refused, unless its runs are cancelled with it. (A yearly
    # schedule: no slot fires while the test runs, so the one run is the one started here.)
    write(stack, "slow.yml", 'name: slow\nmember: nova\ntrigger: {schedule: "0 3 1 1 *"}\nsteps: [{id: nap, wait: 1h}]\n')
    assert stack.cli("workflow", "apply", "slow.yml").returncode == 0
    start(stack, "slow")
    deleting = stack.cli("workflow", "delete", "slow")
    assert deleting.returncode == 2 and "1 run(s) still unfinished" in deleting.stderr and "--cancel-runs" in deleting.stderr
    deleting = stack.cli("workflow", "delete", "slow", "--cancel-runs")
    assert deleting.returncode == 0, deleting.stderr
    assert deleting.stdout.strip() == "slow: deleted (1 unfinished run(s) stopped)"
    assert names(stack) == ["chase"]
    assert json.loads(stack.cli("runs", "--json").stdout) == []
    assert ["workflow_deleted"] * 2 == [a for (a,) in query(stack, select(Activity.action).where(Activity.action == "workflow_deleted"))]


def test_an_event_chain_apply_cannot_see_stops_at_max_handoff_depth(stack: Stack) -> None:
    stack.up()
    # start hands off to casey; relay (listening for casey's handoffs) hands off to nova; echo
    # (listening for nova's) hands off to casey again. apply refuses echo's handoff as a loop,
    # so it is applied harmless and then rewritten in the database, as a row apply never saw.
    for name, text in {
        "start": "member: nova\n" + MANUAL + "steps: [{id: go, handoff: {member: casey, message: go}}]\n",
        "relay": "member: casey\ntrigger: {event: {name: member.handoff, member: casey}}\n"
                 "steps: [{id: relay_on, handoff: {member: nova, message: onward}}]\n",
        "echo": "member: nova\ntrigger: {event: {name: member.handoff, member: nova}}\nsteps: [{id: now, tool: current_time}]\n",
    }.items():
        assert stack.cli("workflow", "apply", write(stack, f"{name}.yml", f"name: {name}\n{text}")).returncode == 0
    looping = {"name": "echo", "member": "nova", "trigger": {"event": {"name": "member.handoff", "member": "nova"}},
               "steps": [{"id": "back", "handoff": {"member": "casey", "message": "back"}}]}
    [(echo_id,)] = query(stack, select(Workflow.id).where(Workflow.name == "echo"))

    async def rewrite() -> None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                await session.execute(update(WorkflowVersion).where(WorkflowVersion.workflow_id == echo_id).values(definition=looping))
        finally:
            await db.close()

    asyncio.run(rewrite())
    start(stack, "start")

    def runs() -> list[dict[str, Any]]:
        return list(json.loads(stack.cli("runs", "--json").stdout))

    wait_until(lambda: query(stack, select(WorkflowRun.id).where(WorkflowRun.status == "failed")), timeout=60, interval=0.2,
               what="the chain to stop")
    time.sleep(2)  # nothing goes on after it
    everything = runs()
    deepest = [r for r in everything if r["status"] == "failed"]
    assert len(everything) == 6, [(r["workflow"], r["depth"], r["status"]) for r in everything]
    assert sorted(r["depth"] for r in everything) == [0, 1, 2, 3, 4, 5]
    [failed] = deepest
    assert failed["depth"] == 5 and failed["workflow"] == "relay"
    assert "more than workflows.max_handoff_depth (5)" in failed["error"]
    assert all(r["status"] == "completed" for r in everything if r["id"] != failed["id"])
    feed = [d for (d,) in query(stack, select(Activity.description).where(Activity.run_id == failed["id"]))]
    assert any("max_handoff_depth (5)" in d for d in feed), feed


def test_workflow_agent_steps_are_metered_per_member_workflow_and_run(stack: Stack) -> None:
    stack.up()
    write(stack, "draft.yml", "name: drafting\nmember: nova\n" + MANUAL +
          "steps: [{id: draft, agent: casey, prompt: 'Draft a note'}]\n")
    assert stack.cli("workflow", "apply", "draft.yml").returncode == 0
    stack.llm.script(Reply(text="A note", usage={"input_tokens": 1234, "output_tokens": 56}))
    run_id = start(stack, "drafting")
    wait_status(stack, run_id, "completed")
    rows = query(stack, select(LlmUsage.member_id, LlmUsage.workflow, LlmUsage.run_id, LlmUsage.input_tokens, LlmUsage.output_tokens))
    assert rows == [("casey", "drafting", run_id, 1234, 56)]
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["tokens"]["casey"]["input"] == 1234 and status["tokens"]["casey"]["output"] == 56
    spent = status["workflow_tokens"]["drafting"]
    assert (spent["input"], spent["output"], spent["runs"]) == (1234, 56, 1)
