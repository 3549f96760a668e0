"""Event-to-reply time when many people DM members at the same moment, and what it costs in memory.

Why: a turn spends nearly all its time waiting on Claude and one worker process answers one
turn at a time, so at a busy moment people wait in the queue in front of the workers. This sends
N DMs at once (N = 20, then 50; people alternate between Nova and Casey) to the default
`teammates run` while the Anthropic fake answers every call after 2 s, and reports per person
the time from the signed event to the reply stored in the Slack fake. Memory is summed over the
whole process tree as PSS: the worker pools fork after the heavy imports and share those pages,
so summed RSS counts them once per worker (RSS is printed beside it, for comparison).

A second measurement starts `teammates serve` alone with 50 configured members (50 Bolt apps,
50 Slack clients) and reports its RSS after one event to each member's route, so that every
app has run its `auth.test`.

Everything runs on 127.0.0.1: redis-server, FakeSlack, FakeAnthropic, SQLite in a temp dir.

    .venv/bin/python bench/concurrency.py [--people 20,50] [--llm-delay 2.0] [--workers N]
                                          [--warmup N] [--members 50] [--json]

Exit status 1 when a person got no reply or more than one, or an event was not acked with 200
(the figures are then suspect); the targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import psutil
from _stack import (
    MEMBERS,
    Creds,
    Person,
    Stack,
    busy_cpu_seconds,
    dm_body,
    free_port,
    post,
    replies,
    summary,
    wait_replies,
)
from _util import log, run_bench

from teammates.cli import DEFAULT_WORKERS
from teammates.processes import split_workers
from tests.conftest import CONFIG

TARGET_P95_AT_20 = 3.0  # seconds
TARGET_SERVE_RSS_MB = 150.0
REPLY_TIMEOUT = 60.0
SETTLE = 1.0  # seconds to wait after the last reply, so a late duplicate is counted
MB = 1024 * 1024


@dataclass
class Round:
    """What one burst of N simultaneous DMs produced."""

    people: int
    latency: dict[str, float]  # event sent -> reply stored, seconds
    ack: dict[str, float]  # event sent -> HTTP 200 from `teammates run`, seconds
    send_spread: float  # first to last send of the burst, seconds
    bad_acks: int
    missing: int
    duplicates: int
    unexpected: int  # other posts during the round (an apology, a stray message)
    machine_busy: float  # share of all CPUs busy during the round (anything running), 0..1

    @property
    def ok(self) -> bool:
        return not (self.bad_acks or self.missing or self.duplicates or self.unexpected)


async def burst(stack: Stack, url: str, people: list[Person], label: str) -> Round:
    """Every person sends one DM at once; wait for the replies and judge them."""
    assert stack.slack is not None
    targets = stack.drivers(url)
    texts = [f"{label} from {p.user}: can you check invoice {i}?" for i, p in enumerate(people)]
    bodies = [dm_body(stack.slack, targets[p.member], p, text)[0] for p, text in zip(people, texts, strict=True)]
    started = time.time()
    cpu_before, clock_before = busy_cpu_seconds(), time.monotonic()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async def one(person: Person, body: bytes) -> tuple[float, int, float]:
            sent = time.time()  # wall clock: the Slack fake's ts is too
            status = await post(session, targets[person.member], body)
            return sent, status, time.time() - sent

        results = await asyncio.gather(*(one(p, b) for p, b in zip(people, bodies, strict=True)))

    expected = [f"re: {text}" for text in texts]
    await wait_replies(stack.slack, expected, REPLY_TIMEOUT)
    busy = (busy_cpu_seconds() - cpu_before) / ((time.monotonic() - clock_before) * (psutil.cpu_count() or 1))
    await asyncio.sleep(SETTLE)
    seen = replies(stack.slack)
    latencies = [min(seen[want]) - sent for want, (sent, _, _) in zip(expected, results, strict=True) if seen.get(want)]
    wanted = set(expected)
    return Round(
        people=len(people),
        latency=summary(latencies),
        ack=summary([ack for _, status, ack in results if status == 200]),
        send_spread=max(s for s, _, _ in results) - min(s for s, _, _ in results),
        bad_acks=sum(status != 200 for _, status, _ in results),
        missing=sum(not seen.get(want) for want in expected),
        duplicates=sum(max(0, len(seen.get(want, [])) - 1) for want in expected),
        unexpected=sum(1 for text, times in seen.items() if text not in wanted for t in times if t >= started),
        machine_busy=busy,
    )



def tree_memory(pid: int) -> dict[str, float]:
    """PSS and RSS summed over `teammates run` and all its descendants, and per layer.

    Layers: the web process itself (the `run` parent serves HTTP), the worker pool parents
    (its children) and below them the forked workers (plus RQ's scheduler process)."""
    root = psutil.Process(pid)
    totals = {"pss": 0, "rss": 0, "pools_pss": 0, "workers_pss": 0}
    pools = root.children()
    workers = [child for pool in pools for child in pool.children(recursive=True)]
    for layer, procs in (("root", [root]), ("pools", pools), ("workers", workers)):
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            totals["pss"] += info.pss
            totals["rss"] += info.rss
            if layer != "root":
                totals[f"{layer}_pss"] += info.pss
    web = root.memory_full_info()
    return {"processes": 1 + len(pools) + len(workers), "pss_mb": totals["pss"] / MB, "rss_mb": totals["rss"] / MB,
            "web_rss_mb": web.rss / MB, "web_pss_mb": web.pss / MB, "pools_pss_mb": totals["pools_pss"] / MB,
            "workers_pss_mb": totals["workers_pss"] / MB, "below_pools": len(workers)}


def measure_run(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    """`teammates run` (default workers unless --workers), a warm-up, then one burst per size."""
    workers = args.workers or DEFAULT_WORKERS
    expected_workers = sum(count for _, count in split_workers(workers))
    stack = Stack("concurrency")
    try:
        stack.start_redis()
        stack.start_slack(MEMBERS)
        stack.start_llm(args.llm_delay)
        members = list(MEMBERS)
        people = stack.add_people(max(sizes), members)
        warmup = stack.add_people(args.warmup if args.warmup is not None else expected_workers, members, prefix="W")
        stack.configure(CONFIG, f"sqlite:///{stack.tmp}/teammates.db")
        stack.cli("migrate")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        extra = ["--workers", str(args.workers)] if args.workers else []
        run = stack.teammates("run", "run", "--host", "127.0.0.1", "--port", str(port), *extra)
        stack.wait_healthy("run", url)
        stack.wait_workers(expected_workers)
        idle = tree_memory(run.pid)
        log(f"teammates run is up with {expected_workers} workers ({split_workers(workers)}); "
            f"warm-up: {len(warmup)} DMs at once, not measured")

        async def rounds() -> list[Round]:
            # Warm-up: one DM per worker, so every worker process has built its lazy clients.
            if warmup:
                warm = await burst(stack, url, warmup, "warm-up")
                if not warm.ok:
                    log(f"warm-up was not clean: {warm}")
            out = []
            for size in sizes:
                log(f"{size} people DM at the same moment (LLM answers after {args.llm_delay:g} s)")
                out.append(await burst(stack, url, people[:size], f"round {size}"))
            return out

        measured = asyncio.run(rounds())
        memory = tree_memory(run.pid)
        return {"workers": workers, "worker_processes": expected_workers, "rounds": measured, "memory": memory,
                "memory_idle": idle}
    finally:
        stack.close()


def members_config(bots: dict[str, Creds]) -> str:
    """A config of many members, each with its own Slack app credentials from the environment."""
    lines = ["workspace: {name: Acme BV, locale: en-GB, timezone: Europe/Amsterdam, currency: EUR}",
             "llm: {model: claude-test-model, timeout: 5, max_retries: 1, max_iterations: 4}",
             "members:"]
    for member in bots:
        var = member.upper()
        lines += [f"  - id: {member}", f"    name: Member {member}", "    role: Bench",
                  "    tools: [lookup_user]", "    slack:",
                  f"      bot_token: ${{{var}_SLACK_BOT_TOKEN}}",
                  f"      signing_secret: ${{{var}_SLACK_SIGNING_SECRET}}"]
    return "\n".join(lines) + "\n"


def measure_members(count: int) -> dict[str, Any]:
    """RSS of `teammates serve` alone with `count` members, once every member's app is in use."""
    bots = {f"m{i:02d}": {"token": f"xoxb-m{i:02d}-bench", "secret": f"m{i:02d}-signing-secret",
                          "user": f"U0M{i:02d}BOT", "bot": f"B0M{i:02d}BOT"} for i in range(1, count + 1)}
    stack = Stack("members")
    try:
        stack.start_redis()
        slack = stack.start_slack(bots)
        people = stack.add_people(count, list(bots), prefix="Q")  # person i DMs member i
        stack.configure(members_config(bots), f"sqlite:///{stack.tmp}/teammates.db")
        stack.cli("migrate")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = stack.teammates("serve", "serve", "--host", "127.0.0.1", "--port", str(port))
        stack.wait_healthy("serve", url)
        process = psutil.Process(serve.pid)
        idle = process.memory_info().rss

        async def one_each() -> list[int]:
            targets = stack.drivers(url)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                return [await post(session, targets[p.member], dm_body(slack, targets[p.member], p, "hello")[0])
                        for p in people]

        statuses = asyncio.run(one_each())
        time.sleep(0.5)
        info = process.memory_full_info()
        return {"members": count, "rss_mb": info.rss / MB, "pss_mb": info.pss / MB, "rss_before_events_mb": idle / MB,
                "acked": statuses.count(200), "auth_tests": len(slack.calls_to("auth.test"))}
    finally:
        stack.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The bursts against `teammates run`, then `teammates serve` alone with many members."""
    sizes = [int(n) for n in args.people.split(",") if n.strip()]
    result = measure_run(args, sizes)
    log(f"teammates serve alone with {args.members} members")
    result["members"] = measure_members(args.members)
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rounds: list[Round] = result["rounds"]
    memory, members = result["memory"], result["members"]
    if args.json:
        doc = {**result, "rounds": [asdict(r) for r in rounds], "llm_delay": args.llm_delay,
               "targets": {"p95_at_20_s": TARGET_P95_AT_20, "serve_rss_mb": TARGET_SERVE_RSS_MB}}
        print(json.dumps(doc, indent=2))
        return
    print(f"teammates run, {result['worker_processes']} worker processes (--workers {result['workers']}), "
          f"SQLite; LLM fake answers each call after {args.llm_delay:g} s; {psutil.cpu_count()} CPUs")
    print(f"{'people':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'ack p95 ms':>11} {'spread ms':>10} "
          f"{'non-200':>8} {'lost':>5} {'dup':>4} {'other':>6} {'CPUs busy':>10}")
    for r in rounds:
        print(f"{r.people:>6} {r.latency['p50']:>7.2f} {r.latency['p95']:>7.2f} {r.latency['max']:>7.2f} "
              f"{r.ack['p95'] * 1000:>11.1f} {r.send_spread * 1000:>10.1f} {r.bad_acks:>8} {r.missing:>5} "
              f"{r.duplicates:>4} {r.unexpected:>6} {r.machine_busy:>10.0%}")
    at20 = next((r for r in rounds if r.people == 20), None)
    if at20 is not None:
        verdict = "met" if at20.latency["p95"] <= TARGET_P95_AT_20 else "NOT met"
        print(f"p95 at 20 at once: {at20.latency['p95']:.2f} s (target <= {TARGET_P95_AT_20:g} s: {verdict})")
    for when, m in (("before the warm-up", result["memory_idle"]), ("after the rounds", memory)):
        print(f"memory of the whole tree {when} ({m['processes']} processes): PSS {m['pss_mb']:.0f} MB "
              f"(RSS summed {m['rss_mb']:.0f} MB) = web {m['web_pss_mb']:.0f} + pool parents {m['pools_pss_mb']:.0f} "
              f"+ {m['below_pools']} workers/scheduler {m['workers_pss_mb']:.0f} "
              f"({m['workers_pss_mb'] / max(1, m['below_pools']):.0f} each); web process RSS {m['web_rss_mb']:.0f} MB")
    verdict = "met" if members["rss_mb"] <= TARGET_SERVE_RSS_MB else "NOT met"
    print(f"teammates serve with {members['members']} members: RSS {members['rss_mb']:.0f} MB after one event "
          f"each ({members['rss_before_events_mb']:.0f} MB before; {members['auth_tests']} auth.test calls, "
          f"{members['acked']} acked) (target <= {TARGET_SERVE_RSS_MB:g} MB: {verdict})")


def sound(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Every person got exactly one reply, every event was acked, every member answered."""
    return all(r.ok for r in result["rounds"]) and result["members"]["acked"] == args.members


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", default="20,50", help="comma-separated burst sizes (default 20,50)")
    parser.add_argument("--llm-delay", type=float, default=2.0, help="seconds the LLM fake takes per call (default 2)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"pass --workers to `teammates run` (default: not passed, i.e. {DEFAULT_WORKERS})")
    parser.add_argument("--warmup", type=int, default=None,
                        help="DMs in the unmeasured warm-up burst (default: one per worker process)")
    parser.add_argument("--members", type=int, default=50, help="members of the `serve`-alone measurement (default 50)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    return run_bench(parser, measure, report, sound)


if __name__ == "__main__":
    sys.exit(main())
