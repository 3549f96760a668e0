"""`teammates audit export`, end to end: after a plan started from chat, a run approved by a
click and a run rejected from the CLI, the export of the period lists every plan, run,
decision, activity row and cost exactly once with its ids, its costs add up to the LLM cost
of the period, and its CSV parses with the columns the README documents."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from storage.db import Database
from tests.conftest import ANA, ROOT, Stack, wait_until
from tests.test_approvals import click as click_request
from tests.test_approvals import pipeline, requests_posted
from tests.test_builder import ask_for_a_plan, workflows
from tests.test_builder import click as click_card
from tests.test_workflows import run_json, start, wait_status

Json = dict[str, Any]


def query(stack: Stack, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return list((await session.execute(text(sql))).all())
        finally:
            await db.close()

    return asyncio.run(run())


def export(stack: Stack, since: str, fmt: str = "jsonl") -> str:
    result = stack.cli("audit", "export", "--since", since, "--format", fmt)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documented_columns() -> list[str]:
    """The CSV columns as the README's audit table lists them, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("Audit export CSV columns", 1)[1]
    table = section.split("\n\n", 2)[1]
    return re.findall(r"^\| `(\w+)` \|", table, flags=re.M)


def approval_of(stack: Stack, run_id: str) -> str:
    return next(s["approval_id"] for s in run_json(stack, run_id)["steps"] if s["approval_id"])


def test_the_export_lists_every_run_decision_and_cost_of_the_period_once_with_its_ids(stack: Stack) -> None:
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace("max_iterations: 4}", "max_iterations: 4, prices: {claude-test-model: {input: 3.0, output: 15.0}}}"))
    stack.up(workers=2)
    # Who asked, what was planned: a plan drafted in chat, started by Ana's click.
    card = ask_for_a_plan(stack)
    assert click_card(stack, card, "plan.start", ANA) == 200
    wait_until(lambda: workflows(stack), what="the started workflow")
    # What ran and who approved: a run with agent steps approved by a click ...
    approved_run = pipeline(stack, "FACTS", "SUMMARY", "REPORT")
    [request] = wait_until(lambda: requests_posted(stack), what="the approval request")
    assert click_request(stack, request, "approval.approve", ANA) == 200
    assert wait_status(stack, approved_run, "completed", "failed")["status"] == "completed"
    # ... and a run of the planned workflow, rejected from the command line.
    rejected_run = start(stack, "payment-reminders")
    assert wait_status(stack, rejected_run, "waiting")["status"] == "waiting"
    rejected = approval_of(stack, rejected_run)
    result = stack.cli("approvals", "reject", rejected, "--as", "ana", "--reason", "not this week")
    assert result.returncode == 0, result.stderr
    assert wait_status(stack, rejected_run, "completed", "failed")["status"] == "completed"
    approved = approval_of(stack, approved_run)

    records = [json.loads(line) for line in export(stack, (datetime.now(UTC).date() - timedelta(days=1)).isoformat()).splitlines()]
    kinds = Counter(r["kind"] for r in records)
    # Every run once, with who it came from.
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted(r["run_id"] for r in runs) == sorted([approved_run, rejected_run])
    # Every decision once, with its approval and run, and who decided.
    decisions = sorted((r["approval_id"], r["run_id"], r["actor"], r["description"].split(":")[0]) for r in records if r["kind"] == "decision")
    assert decisions == sorted([(approved, approved_run, ANA, "Approved"), (rejected, rejected_run, ANA, "Rejected (not this week)")])
    assert sorted(r["approval_id"] for r in records if r["kind"] == "approval") == sorted([approved, rejected])
    # What was planned: the plan, and its start in the activity rows with the same plan id.
    [plan] = [r for r in records if r["kind"] == "plan"]
    assert plan["member"] == "nova" and plan["workflow"] == "payment-reminders" and plan["actor"] == "ana"
    assert "started" in plan["description"]
    assert [r["plan_id"] for r in records if r["kind"] == "activity" and r["description"].startswith("plan.started")] == [plan["plan_id"]]
    # Every activity row once, by its id.
    activity_ids = sorted(row[0] for row in query(stack, "SELECT id FROM activity"))
    assert sorted(r["activity_id"] for r in records if r["kind"] == "activity") == activity_ids
    # What it cost: one record per run and per turn, adding up to the period's LLM cost.
    costs = [r for r in records if r["kind"] == "cost"]
    [[spent]] = query(stack, "SELECT SUM(cost) FROM llm_usage")
    assert spent > 0 and abs(sum(r["cost"] for r in costs) - spent) < 1e-6
    assert [r["run_id"] for r in costs if r["run_id"]] == [approved_run]  # the planned workflow has no agent step
    turns = [r["turn_id"] for r in costs if r["turn_id"]]
    assert turns and len(turns) == len(set(turns))
    assert all(r["cost"] is None for r in records if r["kind"] != "cost")
    # What ran outside: the approved run's post, as its step's effect record.
    assert [r["description"].split(" (")[0] for r in records if r["kind"] == "effect" and r["run_id"] == approved_run] == ["post done"]
    assert kinds["step"] >= 5 and [r["time"] for r in records] == sorted(r["time"] for r in records)

    # The CSV: the README's columns, the same records.
    table = list(csv.DictReader(io.StringIO(export(stack, (datetime.now(UTC).date() - timedelta(days=1)).isoformat(), "csv"))))
    assert list(table[0]) == documented_columns()
    assert len(table) == len(records)
    assert [(row["kind"], row["run_id"], row["approval_id"], row["activity_id"]) for row in table] == [
        (r["kind"], r["run_id"] or "", r["approval_id"] or "", str(r["activity_id"] or "")) for r in records]
    assert abs(sum(float(row["cost"]) for row in table if row["cost"]) - spent) < 1e-6
    # A date that is no date is one clear line, not a traceback.
    bad = stack.cli("audit", "export", "--since", "last tuesday")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--since" in bad.stderr
    # A period that starts after it all lists nothing.
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert export(stack, tomorrow) == ""
    assert export(stack, tomorrow, "csv").strip() == ",".join(documented_columns())
