"""Spend control from the admin's side: `teammates usage` adds up exactly what the model
reported, call for call, per member and per person, priced by `llm.prices`; `budget set`
changes a budget at once (and says so in the activity feed); `status` and `/metrics` show the
same figures. Bad input is one line and exit code 2."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections import defaultdict
from typing import Any

import pytest

from tests.conftest import ANA, BOB, CASEY, CASEY_DM, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_turns import activity_rows
from tests.test_workflows import start, wait_status

PRICE = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}  # per million tokens
NOVA_BOB = "D0NOVABOB1"
CASEY_BOB = "D0CASEYBOB"
MARK = re.compile(r"\[(nova|casey) (ana|bob|wf) \d+\]")  # member, person (wf: a workflow step), number

SPEND = """\
budgets:
  workspace: {tokens: 5000000, period: month}
  members: {nova: {cost: 150, period: month}}
  people: {default: {tokens: 400000, period: day}}
"""


def configure(stack: Stack) -> None:
    path = stack.workdir / "teammates.yml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("llm:"))
    new = old[:-1] + f", prices: {{claude-test-model: {json.dumps(PRICE)}}}}}"
    path.write_text(text.replace(old, new) + SPEND)
    stack.slack.add_im(NOVA_BOB, BOB, NOVA["user"])
    stack.slack.add_im(CASEY_BOB, BOB, CASEY["user"])


class Scripted:
    """Answers every model call with its own usage figures, and remembers, per call, which
    member and person it was for (from the marker in the message) and what it reported."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, int]]] = []
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)

    def __call__(self, body: dict[str, Any]) -> Reply:
        text = json.dumps(body["messages"][-1])
        found = MARK.findall(text)
        member, person = found[-1] if found else ("?", "?")
        n = next(self.numbers)
        reported = {"input_tokens": 1000 + 17 * n, "output_tokens": 200 + 5 * n,
                    "cache_read_input_tokens": 3000 + 101 * n, "cache_creation_input_tokens": 400 + 11 * n}
        with self.lock:
            self.calls.append((member, person, reported))
        return Reply(text=f"Answer {n}.", usage=reported)


def expected(calls: list[tuple[str, str, dict[str, int]]], key: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for call in calls:
        u = call[2]
        figures = {"input": u["input_tokens"], "output": u["output_tokens"], "cache_read": u["cache_read_input_tokens"],
                   "cache_write": u["cache_creation_input_tokens"]}
        row = out[str(call[key])]
        for name, value in figures.items():
            row[name] += value
        row["total"] += sum(figures.values())
        row["cost"] += sum(figures[k] * PRICE[k] for k in figures) / 1_000_000
        row["calls"] += 1
    return out


def usage_json(stack: Stack, *args: str) -> dict[str, Any]:
    done = stack.cli("usage", "--json", *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def same_figures(row: dict[str, Any], want: dict[str, float]) -> None:
    for key in ("input", "output", "cache_read", "cache_write", "total", "calls"):
        assert row[key] == want[key], (key, row, want)
    assert row["cost"] == pytest.approx(want["cost"], abs=1e-6)


def budget(doc: list[dict[str, Any]], scope: str) -> dict[str, Any]:
    return next(b for b in doc if b["scope"] == scope)


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


def test_usage_adds_up_the_models_reported_usage_per_member_and_person_and_budget_set_changes_it_at_once(stack: Stack) -> None:
    configure(stack)
    stack.up()
    scripted = Scripted()
    stack.llm.set_responder(scripted)
    conversations = [("nova", "ana", ANA, NOVA_DM), ("nova", "ana", ANA, NOVA_DM), ("nova", "bob", BOB, NOVA_BOB),
                     ("casey", "ana", ANA, CASEY_DM), ("casey", "bob", BOB, CASEY_BOB), ("casey", "bob", BOB, CASEY_BOB)]
    replies = {"nova": 0, "casey": 0}
    for i, (member, who, user, channel) in enumerate(conversations):
        stack.driver(member).dm(user, f"[{member} {who} {i}] how are the invoices?", channel=channel)
        replies[member] += 1
        stack.slack.wait_for_posts(replies[member], token=(NOVA if member == "nova" else CASEY)["token"], timeout=40)
    (stack.workdir / "draft.yml").write_text("name: drafting\nmember: nova\ntrigger: {manual: {}}\n"
                                             "steps: [{id: draft, agent: casey, prompt: '[casey wf 9] Draft a note'}]\n")
    assert stack.cli("workflow", "apply", "draft.yml").returncode == 0
    wait_status(stack, start(stack, "drafting"), "completed")
    calls = list(scripted.calls)
    assert len(calls) == len(conversations) + 1 and all(c[0] != "?" for c in calls), calls

    doc = usage_json(stack)
    assert doc["currency"] == "EUR"
    same_figures(doc["total"], _sum(expected(calls, 0)))
    by_member = expected(calls, 0)
    assert {r["member"] for r in doc["members"]} == {"nova", "casey"}
    for row in doc["members"]:
        same_figures(row, by_member[row["member"]])
    by_person = expected(calls, 1)
    people = {r["person"]: r for r in doc["people"]}
    assert set(people) == {"ana", BOB}  # ana is in people:, Bob is known by his Slack id; a workflow step has no person
    same_figures(people["ana"], by_person["ana"])
    same_figures(people[BOB], by_person["bob"])
    [workflow] = doc["workflows"]
    assert (workflow["workflow"], workflow["runs"]) == ("drafting", 1)
    same_figures(workflow, expected([c for c in calls if c[1] == "wf"], 0)["casey"])
    assert sum(d["total"] for d in doc["days"]) == doc["total"]["total"]

    # Each budget's use, from the ledger the budget check reserves in.
    nova_cost = by_member["nova"]["cost"]
    nova = budget(doc["budgets"], "member:nova")
    assert (nova["metric"], nova["limit"], nova["period"], nova["set_by"]) == ("cost", 150, "month", None)
    assert nova["used"] == pytest.approx(nova_cost, abs=1e-6) and nova["reserved"] == 0
    assert nova["left"] == pytest.approx(150 - nova_cost, abs=1e-6)
    assert re.fullmatch(r"\d{4}-\d{2}", nova["period_key"]) and nova["resets_at"].endswith(("+01:00", "+02:00"))
    assert budget(doc["budgets"], "workspace")["used"] == doc["total"]["total"]
    ana = budget(doc["budgets"], "person:ana")
    assert (ana["via"], ana["used"], ana["limit"]) == ("person:default", by_person["ana"]["total"], 400000)

    # Filters
    only = usage_json(stack, "--member", "casey", "--person", "ana")
    same_figures(only["total"], expected([c for c in calls if c[:2] == ("casey", "ana")], 0)["casey"])
    assert {b["scope"] for b in only["budgets"]} <= {"workspace", "person:ana", "person:default"}

    # Raise Nova's budget: the usage view shows the new limit at once, and the feed says who did it.
    done = stack.cli("budget", "set", "member:nova", "--cost", "300", "--period", "month", "--as", "ana")
    assert done.returncode == 0, done.stderr
    assert "300.00 EUR per month" in done.stdout and "150.00 EUR per month" in done.stdout
    nova = budget(usage_json(stack)["budgets"], "member:nova")
    assert (nova["limit"], nova["set_by"]) == (300, "ana")
    assert nova["left"] == pytest.approx(300 - nova_cost, abs=1e-6)
    [row] = activity_rows(stack, "budget.set")
    assert row["actor"] == "ana" and row["member"] == "nova"
    assert "150.00 EUR per month" in row["description"] and "300.00 EUR per month" in row["description"]

    # A member's daily effect cap, from the CLI.
    done = stack.cli("budget", "set", "member:casey", "--effects", "12")
    assert done.returncode == 0, done.stderr
    listed = json.loads(stack.cli("budget", "list", "--json").stdout)
    cap = budget(listed, "effects:casey")
    assert (cap["metric"], cap["limit"], cap["period"], cap["set_by"]) == ("effects", 12, "day", "cli")
    assert [r["actor"] for r in activity_rows(stack, "budget.set")] == ["ana", "cli"]

    # Bad input: one line, exit code 2, nothing changed.
    for bad, says in ((["member:nobody", "--tokens", "5", "--period", "day"], "no member 'nobody'"),
                      (["workspace", "--cost", "-1", "--period", "day"], "at least 0"),
                      (["workspace", "--effects", "3"], "member:ID"),
                      (["team:x", "--tokens", "5", "--period", "day"], "expected workspace, member:ID or person:ID"),
                      (["person:zed", "--tokens", "5", "--period", "day"], "no person 'zed'"),
                      (["workspace", "--tokens", "5", "--cost", "3", "--period", "day"], "not allowed with"),
                      (["workspace", "--tokens", "many"], "invalid int value")):
        done = stack.cli("budget", "set", *bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, (bad, done.stderr)
        assert "Traceback" not in done.stderr
    assert len(activity_rows(stack, "budget.set")) == 2
    done = stack.cli("usage", "--member", "nobody")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "nobody" in done.stderr

    # The human table names every member, person and budget.
    table = stack.cli("usage").stdout
    for word in ("nova", "casey", "ana", BOB, "member:nova", "person:ana", "effects:casey", f"{int(by_member['nova']['total']):,}"):
        assert word in table, (word, table)

    # Status and /metrics show the same figures.
    status = json.loads(stack.cli("status", "--json").stdout)
    members = {m["member"]: m for m in status["members"]}
    assert members["nova"]["tokens"] == by_member["nova"]["total"]
    assert members["nova"]["cost"] == pytest.approx(nova_cost, abs=1e-6)
    assert members["nova"]["budget_left"]["cost"] == pytest.approx(300 - nova_cost, abs=1e-6)
    assert members["nova"]["budget_left"]["tokens"] == 5000000 - doc["total"]["total"]
    said = stack.cli("status").stdout
    assert f"spend nova: {int(by_member['nova']['total']):,} tokens" in said and f"{300 - nova_cost:,.2f} EUR" in said, said
    scraped = stack.scrape()
    for member in ("nova", "casey"):
        for kind in ("input", "output", "cache_read", "cache_write"):
            assert metric(scraped, "teammates_llm_tokens_total", member=member, kind=kind) == by_member[member][kind]
        assert metric(scraped, "teammates_llm_cost_total", member=member) == pytest.approx(by_member[member]["cost"], abs=1e-6)
    assert metric(scraped, "teammates_budget_left", scope="member:nova", metric="cost") == pytest.approx(300 - nova_cost, abs=1e-6)

    # Lowered below what one call needs: the running worker refuses Nova's next call, no restart.
    assert stack.cli("budget", "set", "member:nova", "--tokens", "100", "--period", "day").returncode == 0
    stack.driver("nova").dm(ANA, "[nova ana 99] and now?", channel=NOVA_DM)
    refusal = wait_until(lambda: [p for p in stack.slack.posts_by(NOVA["token"])
                                  if p.get("channel") == NOVA_DM and "used up" in str(p.get("text"))],
                         timeout=40, what="Nova's refusal")
    assert "teammates budget set member:nova" in refusal[0]["text"]
    assert len(scripted.calls) == len(calls)  # no model call was made for it


def _sum(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for row in rows.values():
        for key, value in row.items():
            out[key] += value
    return out


def test_days_are_the_workspaces_calendar_days_across_a_clock_change_and_since_starts_at_its_midnight(stack: Stack) -> None:
    """Calls recorded at given moments (as the meter records them); the report's days are
    Amsterdam's, on both sides of the switch to summer time (29 March 2026, 01:00 UTC)."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from storage import usage
    from storage.db import Database
    from storage.models import LlmUsage

    moments = {  # UTC moment -> (Amsterdam day, input tokens, user)
        datetime(2026, 3, 28, 22, 50, tzinfo=UTC): ("2026-03-28", 1, ANA),  # 23:50 CET
        datetime(2026, 3, 28, 23, 30, tzinfo=UTC): ("2026-03-29", 10, BOB),  # 00:30 CET
        datetime(2026, 3, 29, 21, 55, tzinfo=UTC): ("2026-03-29", 100, ANA),  # 23:55 CEST
        datetime(2026, 3, 29, 22, 10, tzinfo=UTC): ("2026-03-30", 1000, ANA),  # 00:10 CEST
        datetime(2026, 6, 1, 12, 0, tzinfo=UTC): ("2026-06-01", 10000, BOB),
    }

    async def record() -> None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                for n, (at, (_day, tokens, user)) in enumerate(moments.items()):
                    await usage.record(session, member_id="nova", user_id=user, conversation_id=None, run_id=f"run{n}",
                                       model="claude-test-model", input_tokens=tokens, output_tokens=0, cache_read_tokens=0,
                                       cache_write_tokens=0, cost=tokens / 1000)
                    await session.execute(update(LlmUsage).where(LlmUsage.run_id == f"run{n}").values(created_at=at))
        finally:
            await db.close()

    asyncio.run(record())
    days = {d["day"]: d["input"] for d in usage_json(stack)["days"]}
    assert days == {"2026-03-28": 1, "2026-03-29": 110, "2026-03-30": 1000, "2026-06-01": 10000}
    since = usage_json(stack, "--since", "2026-03-29")
    assert since["since"] == "2026-03-29T00:00:00+01:00"
    assert {d["day"]: d["input"] for d in since["days"]} == {"2026-03-29": 110, "2026-03-30": 1000, "2026-06-01": 10000}
    assert since["total"]["input"] == 11110 and since["total"]["cost"] == pytest.approx(11.11)
    ana = usage_json(stack, "--person", "ana", "--since", "2026-03-29")
    assert ana["total"]["input"] == 1100 and [p["person"] for p in ana["people"]] == ["ana"]
    assert [p["user_ids"] for p in ana["people"]] == [[ANA]]
    for bad in (["--since", "yesterday"], ["--person", "zed"]):
        done = stack.cli("usage", *bad)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (bad, done.stderr)
