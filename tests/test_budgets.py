"""Budgets, checked before every LLM call: a call that does not fit is not made, and the person
hears which budget, when it resets and who can raise it. Concurrent calls (any number of
workers and instances) never together pass a limit."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import ANA, BOB, NOVA, NOVA_DM, Stack, free_port, healthy, wait_until
from tests.fakes.anthropic_api import Reply
from tests.test_capacity import people_dming_nova

OUT = 16  # max_tokens, and what every answer of the fake uses: a call's worst case is its real use
INPUT = 3000  # the fake's input tokens per call, and its count_tokens answer (its requests are ~7,000 bytes)


def fixed() -> Reply:
    return Reply(text="Sure.", usage={"input_tokens": INPUT, "output_tokens": OUT, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0})


PER_CALL = INPUT + OUT


def configure(stack: Stack, budgets: str) -> None:
    stack.llm.set_input_count(INPUT)
    path = stack.workdir / "teammates.yml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("llm:"))
    text = text.replace(old, f"llm: {{model: claude-test-model, timeout: 5, max_retries: 1, max_iterations: 4, max_tokens: {OUT}}}")
    path.write_text(text + budgets)


def calls(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.llm.requests if r["path"] == "/v1/messages"]


def answers(stack: Stack, channel: str) -> list[str]:
    return [m["text"] for m in stack.slack.posts_by(NOVA["token"]) if m.get("channel") == channel]


def wait_answers(stack: Stack, channel: str, n: int, timeout: float = 30) -> list[str]:
    wait_until(lambda: len(answers(stack, channel)) >= n, timeout=timeout, what=f"{n} answer(s) in {channel}: {answers(stack, channel)}")
    return answers(stack, channel)


def ask(stack: Stack, user: str, dm: str, text: str) -> str:
    """One message, and the answer to it."""
    before = len(answers(stack, dm))
    stack.driver().dm(user, text, channel=dm)
    return wait_answers(stack, dm, before + 1)[before]


def test_a_member_budget_for_five_turns_answers_five_of_twenty_concurrent_people_and_a_raise_restores_service(stack: Stack) -> None:
    configure(stack, f"budgets: {{members: {{nova: {{tokens: {5 * PER_CALL}, period: month}}}}}}\n")
    stack.up(workers=2)
    stack.llm.set_responder(lambda _body: fixed())
    crowd = people_dming_nova(stack, 20)
    driver = stack.driver()
    threads = [threading.Thread(target=driver.dm, args=(user, f"question from {user}"), kwargs={"channel": dm}) for user, dm in crowd]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, dm in crowd:
        wait_answers(stack, dm, 1)
    said = Counter("used up" if "used up" in answers(stack, dm)[0] else answers(stack, dm)[0] for _, dm in crowd)
    assert said == Counter({"Sure.": 5, "used up": 15})
    assert len(calls(stack)) == 5, "the fake saw exactly five calls"
    sizes = [len(json.dumps(c["body"]).encode()) for c in calls(stack)]
    assert min(sizes) > INPUT, "the fake's usage is one a request of this size can have (a token is at least a byte)"
    refusal = next(answers(stack, dm)[0] for _, dm in crowd if "used up" in answers(stack, dm)[0])
    assert "Nova's monthly budget" in refusal and f"{5 * PER_CALL:,} tokens" in refusal
    assert "It resets on 1 " in refusal and "Europe/Amsterdam" in refusal
    assert "<@U0ANA00001>" in refusal, "it says who can raise it"
    warned = [p for p in stack.slack.posts_by(NOVA["token"]) if p["text"].startswith("Heads-up: Nova's monthly budget")]
    assert len(warned) == 1 and "100% used" in warned[0]["text"], "the admin is warned once, at warn_at (90%)"

    raised = stack.cli("budget", "set", "member:nova", "--tokens", str(7 * PER_CALL), "--period", "month")
    assert raised.returncode == 0, raised.stderr
    user, dm = crowd[-1]
    assert ask(stack, user, dm, "and now?") == "Sure.", "a raise restores service without a restart"
    assert len(calls(stack)) == 6


def test_a_persons_budget_stops_their_flood_while_someone_else_is_still_answered(stack: Stack) -> None:
    configure(stack, f"budgets: {{people: {{default: {{tokens: {3 * PER_CALL}, period: day}}}}}}\n")
    stack.up()
    stack.llm.set_responder(lambda _body: fixed())
    said = [ask(stack, ANA, NOVA_DM, f"flood {i}") for i in range(5)]
    assert [s.startswith("Sure.") for s in said] == [True, True, True, False, False]
    assert "your daily budget" in said[3] and "It resets at midnight tonight (Europe/Amsterdam time)" in said[3]
    assert len(calls(stack)) == 3
    from tests.test_turns import activity_rows

    [feed] = activity_rows(stack, "budget_exhausted")  # two refusals, one line in the feed
    assert "Ana's daily budget" in feed["description"]
    bob_dm = "D0NOVABOB1"
    stack.slack.add_im(bob_dm, BOB, NOVA["user"])
    assert ask(stack, BOB, bob_dm, "hello, is it my turn?") == "Sure."
    assert len(calls(stack)) == 4


def test_the_warning_comes_once_per_period_and_the_next_period_restores_service(stack: Stack) -> None:
    configure(stack, f"budgets: {{people: {{default: {{tokens: {4 * PER_CALL}, period: day}}}}, warn_at: 0.5}}\n")
    stack.up()
    stack.llm.set_responder(lambda _body: fixed())
    said = [ask(stack, ANA, NOVA_DM, f"question {i}") for i in range(5)]
    warned = ["Heads-up" in s for s in said]
    assert warned == [False, True, False, False, False], said
    assert "your daily budget is 50% used" in said[1]
    assert "used up" in said[4]

    # The day ends: the ledger's rows of today become yesterday's, as tomorrow's clock would see them.
    shift_ledger_to_yesterday(stack)
    again = [ask(stack, ANA, NOVA_DM, f"next day {i}") for i in range(2)]
    assert again[0] == "Sure."
    assert "Heads-up" in again[1], "a new period warns again, once"
    assert len(calls(stack)) == 6


def shift_ledger_to_yesterday(stack: Stack) -> None:
    from zoneinfo import ZoneInfo

    from sqlalchemy import update

    from storage.db import Database
    from storage.models import BudgetUse

    local = datetime.now(UTC).astimezone(ZoneInfo("Europe/Amsterdam"))
    today, yesterday = f"{local:%Y-%m-%d}", f"{local - timedelta(days=1):%Y-%m-%d}"

    async def shift() -> None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                await session.execute(update(BudgetUse).where(BudgetUse.period == today).values(period=yesterday))
        finally:
            await db.close()

    asyncio.run(shift())


AGENT_WORKFLOW = """\
name: {name}
member: nova
trigger: {{manual: {{}}}}
steps:
  - id: draft
    agent: nova
    prompt: Draft a short note.
"""


def test_an_agent_step_over_budget_fails_with_the_reason_and_the_requester_is_told_once(stack: Stack) -> None:
    configure(stack, "budgets: {members: {nova: {tokens: 10, period: month}}}\n")
    stack.up()
    stack.llm.set_responder(lambda _body: fixed())
    (stack.workdir / "wf.yml").write_text(AGENT_WORKFLOW.format(name="notes"))
    applied = stack.cli("workflow", "apply", "wf.yml")
    assert applied.returncode == 0, applied.stderr
    for _ in range(2):
        started = stack.cli("workflow", "run", "notes", "--as", "ana")
        assert started.returncode == 0, started.stderr

    def finished() -> list[dict[str, Any]]:
        done = stack.cli("runs", "--workflow", "notes", "--json")
        runs = json.loads(done.stdout) if done.returncode == 0 else []
        return [r for r in runs if r["status"] in ("failed", "completed")]

    wait_until(lambda: len(finished()) == 2, timeout=40, what="both runs to end")
    for run in finished():
        assert run["status"] == "failed"
        [step] = [s for s in run["steps"] if s["id"] == "draft"]
        assert "over budget" in step["error"] and "Nova's monthly budget (10 tokens) is used up" in step["error"]
    assert calls(stack) == [], "no call was made"
    told = [m for m in stack.slack.posts_by(NOVA["token"]) if "Nova's monthly budget" in m["text"] and "notes stopped" in m["text"]]
    assert len(told) == 1, "the requester (and admin) hears it once per period, not per run"


def test_two_instances_on_one_database_never_overshoot_a_budget_together(stack: Stack) -> None:
    configure(stack, f"budgets: {{workspace: {{tokens: {4 * PER_CALL}, period: day}}}}\n")
    stack.llm.set_responder(lambda _body: Reply(text="Sure.", delay=0.3, usage=fixed().usage))
    other = free_port()
    stack.start("run1", "run", "--host", "127.0.0.1", "--port", str(stack.port), "--workers", "3")
    wait_until(stack._healthy, timeout=30, what="the first instance")
    stack.start("run2", "run", "--host", "127.0.0.1", "--port", str(other), "--workers", "3")
    from tests.conftest import NOVA as creds
    from tests.fakes.slack_driver import SlackDriver

    second = SlackDriver(f"http://127.0.0.1:{other}/slack/nova/events", creds["secret"], bot_user_id=creds["user"], slack=stack.slack)
    wait_until(lambda: healthy(other), timeout=30, what="the second instance")
    crowd = people_dming_nova(stack, 12)
    drivers = [stack.driver(), second]
    threads = [threading.Thread(target=drivers[i % 2].dm, args=(user, f"q {user}"), kwargs={"channel": dm}) for i, (user, dm) in enumerate(crowd)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, dm in crowd:
        wait_answers(stack, dm, 1, timeout=60)
    answered = sum(1 for _, dm in crowd if answers(stack, dm)[0] == "Sure.")
    assert answered == 4 and len(calls(stack)) == 4
    usage = stack.cli("usage", "--json")
    assert usage.returncode == 0, usage.stderr


def test_a_scheduled_run_that_needs_the_llm_is_skipped_with_the_reason_while_the_budget_is_used_up(stack: Stack) -> None:
    from tests.test_seed_story import arrive

    configure(stack, "budgets: {members: {nova: {tokens: 10, period: month}}}\n")
    stack.up()
    (stack.workdir / "wf.yml").write_text(AGENT_WORKFLOW.format(name="morning").replace("{manual: {}}", '{schedule: "0 9 * * *"}'))
    applied = stack.cli("workflow", "apply", "wf.yml")
    assert applied.returncode == 0, applied.stderr
    arrive(stack)

    def runs() -> list[dict[str, Any]]:
        done = stack.cli("runs", "--workflow", "morning", "--json")
        return list(json.loads(done.stdout)) if done.returncode == 0 else []

    [run] = wait_until(runs, timeout=30, what="the slot's run")
    assert run["status"] == "skipped"
    assert run["error"] == "over budget: Nova's monthly budget (10 tokens) is used up"
    assert calls(stack) == []


def test_periods_turn_over_at_midnight_and_on_the_first_of_the_month_in_the_workspace_time_zone() -> None:
    from jobs.spend import periods

    zone = "Europe/Amsterdam"
    before = datetime(2026, 12, 31, 22, 59, 59, tzinfo=UTC)  # 23:59:59 in Amsterdam
    after = before + timedelta(seconds=1)
    assert (periods.key("day", zone, before), periods.key("month", zone, before)) == ("2026-12-31", "2026-12")
    assert (periods.key("day", zone, after), periods.key("month", zone, after)) == ("2027-01-01", "2027-01")
    assert periods.resets_at("month", zone, before).isoformat() == "2027-01-01T00:00:00+01:00"
    assert periods.words(periods.resets_at("day", zone, before), before) == "at midnight tonight (Europe/Amsterdam time)"
    assert periods.words(periods.resets_at("month", zone, after), after) == "on 1 February 2027 at 00:00 (Europe/Amsterdam time)"


def test_a_reservation_whose_process_died_is_released_and_counted_as_used(database_url: str) -> None:
    from jobs.spend import ledger
    from storage import budgets
    from storage.budgets import Claim, Limit
    from storage.db import Database

    limit = Limit("member:nova", "tokens", 1000.0, "month")
    claim = Claim(limit, "2026-12")

    async def main() -> tuple[list[str], float, int]:
        db = Database(database_url)
        try:
            async with db.session() as session:
                await budgets.reserve(session, "dead", [claim], 600, 0.0, datetime.now(UTC) - timedelta(seconds=1))
            refused = []
            try:
                async with db.session() as session:
                    await budgets.reserve(session, "next", [claim], 600, 0.0, datetime.now(UTC) + timedelta(minutes=5))
            except budgets.DoesNotFit as exc:
                refused.append(exc.claim.limit.scope)
            released = await ledger.release_expired(db)
            async with db.session() as session:
                row = (await budgets.use(session, [("member:nova", "2026-12")]))[("member:nova", "2026-12")]
            return refused, row.used("tokens") + row.reserved("tokens"), released
        finally:
            await db.close()

    refused, held, released = asyncio.run(main())
    assert refused == ["member:nova"], "600 + 600 does not fit 1000: nothing of the second reservation stays"
    assert released == 1 and held == 600, "the dead call's worst case counts as used, no longer as in flight"


def test_a_budget_the_product_cannot_enforce_is_a_clear_config_error(tmp_path: Any) -> None:
    import pytest

    from teammates.config import ConfigError, load

    cases = {
        "budgets: {workspace: {cost: 10, tokens: 5}}": "budgets.workspace: expected exactly one of tokens or cost",
        "budgets: {members: {zed: {tokens: 1}}}": "budgets.members: no member 'zed'",
        "llm: {model: claude-test-model}\nbudgets: {workspace: {cost: 10}}": "a cost budget needs the price of 'claude-test-model'",
    }
    for text, expected in cases.items():
        path = tmp_path / "teammates.yml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError) as caught:
            load(str(path), env={})
        assert expected in str(caught.value)
    path.write_text("llm: {model: claude-sonnet-4-5-20250929}\nbudgets: {workspace: {cost: 10}}\n")
    assert load(str(path), env={}).config.llm.price("claude-sonnet-4-5-20250929") is not None, "a dated id has its family's list price"
