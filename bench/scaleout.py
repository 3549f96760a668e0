"""Scale-out on PostgreSQL: 2 `serve` + 2 worker pools against 1 `serve` + 1 pool, same load.

Why: the README promises that any number of `teammates serve` and `teammates worker` processes
can share one PostgreSQL and one Redis because no process keeps state of its own. This checks
both halves of that promise under load: nothing is lost or answered twice when the web
processes race each other (every 5th event is redelivered by "Slack" to the *other* web
process, as after an ack timeout), and twice the processes give about twice the replies/s.

Configuration A: 1 `teammates serve` + 1 `teammates worker --concurrency N`.
Configuration B: 2 `teammates serve` (own ports) + 2 pools of `--concurrency N`; requests
alternate between the two web processes.
Load: `--messages` DMs from `--people` people (round-robin; people alternate between Nova and
Casey), at most 32 requests in flight; the Anthropic fake answers each call after
`--llm-delay` s with `re: <message>`, so each reply names its message.

Each configuration gets a fresh PostgreSQL database (`teammates migrate`), a fresh redis-server
and fresh fakes, and one unmeasured warm-up burst of one DM per worker. The admin URL comes from
TEAMMATES_TEST_POSTGRES, else from `scripts/postgres.sh` (starts Debian's cluster; root only).

    .venv/bin/python bench/scaleout.py [--messages 400] [--people 40] [--workers-per-pool 8]
                                       [--llm-delay 0.2] [--inflight 32] [--json]

Exit status 1 when a reply is lost or duplicated, or a request was not acked with 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import psutil
from _stack import (
    MEMBERS,
    ROOT,
    Person,
    Stack,
    busy_cpu_seconds,
    dm_body,
    free_port,
    post,
    postgres_admin,
    replies,
    summary,
    wait_replies,
)
from _util import log, run_bench
from sqlalchemy.engine import make_url

from tests.conftest import CONFIG

DEADLINE = 60.0  # seconds after the last send; a message unanswered by then is lost
SETTLE = 2.0  # seconds to wait after the last reply, so a late duplicate is counted
REDELIVER_EVERY = 5


@dataclass
class Outcome:
    """One configuration's run of the load."""

    name: str
    web_processes: int
    workers: int
    messages: int
    redeliveries: int
    wall_s: float  # first send -> last reply stored in the Slack fake
    replies_per_s: float
    lost: int
    duplicates: int
    unexpected: int  # posts that answer no message (an apology, a stray post)
    llm_calls: int  # one per message when no turn ran twice
    non_200: int
    ack_ms: dict[str, float]
    cpu_ms_per_reply: dict[str, float]  # by process group, during the load
    machine_busy: float  # share of all CPUs busy during the load, 0..1

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.unexpected or self.non_200)


def admin_url() -> str:
    """TEAMMATES_TEST_POSTGRES, or the URL scripts/postgres.sh prints once the cluster runs."""
    url = os.environ.get("TEAMMATES_TEST_POSTGRES")
    if url:
        return url
    done = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"scripts/postgres.sh failed (set TEAMMATES_TEST_POSTGRES instead):\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def cpu_snapshot(stack: Stack, database: str) -> dict[str, float]:
    """CPU seconds used so far by each group of processes, and by the whole machine.

    Why: every process here shares the machine's CPUs (the fakes and the load run inside this
    process), so replies/s only scales with processes while CPUs are idle. PostgreSQL's share
    is its backends serving our database (their title names it); "other" is the machine minus
    all of ours: anything else running at the same time."""
    groups: dict[str, list[psutil.Process]] = {"serve": [], "workers": [], "redis": [], "postgres": []}
    for proc in psutil.process_iter(["cmdline"]):
        if database in " ".join(proc.info["cmdline"] or []):
            groups["postgres"].append(proc)
    for name, proc in stack.procs.items():
        group = "serve" if name.startswith("web") else "workers" if name.startswith("pool") else name
        if group in groups:
            root = psutil.Process(proc.pid)
            groups[group] += [root, *root.children(recursive=True)]
    groups["bench"] = [psutil.Process()]  # the load, FakeSlack and FakeAnthropic
    out: dict[str, float] = {}
    for group, procs in groups.items():
        out[group] = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[group] += times.user + times.system
    out["machine"] = busy_cpu_seconds()
    out["clock"] = time.monotonic()
    return out


async def warm_up(stack: Stack, urls: list[str], people: list[Person]) -> None:
    """One DM per worker at once, so every worker has its lazily built clients and pools."""
    assert stack.slack is not None
    async with aiohttp.ClientSession() as session:
        texts = []
        sends = []
        for i, person in enumerate(people):
            target = stack.driver(urls[i % len(urls)], person.member)
            texts.append(f"warm-up {i}")
            sends.append(post(session, target, dm_body(stack.slack, target, person, texts[-1])[0]))
        await asyncio.gather(*sends)
    seen = await wait_replies(stack.slack, [f"re: {t}" for t in texts], DEADLINE)
    if not all(seen.get(f"re: {t}") for t in texts):
        log("warm-up: not every DM was answered")


async def load(stack: Stack, urls: list[str], people: list[Person], args: argparse.Namespace) -> dict[str, Any]:
    """Send the messages with bounded concurrency; every 5th is redelivered to the other process."""
    assert stack.slack is not None
    slack = stack.slack
    drivers = [stack.drivers(url) for url in urls]
    gate = asyncio.Semaphore(args.inflight)
    texts = [f"message {i} from {people[i % len(people)].user}" for i in range(args.messages)]
    acks: list[float] = []
    statuses: list[int] = []

    async def send(session: aiohttp.ClientSession, i: int) -> None:
        person = people[i % len(people)]
        first = drivers[i % len(urls)][person.member]
        other = drivers[(i + 1) % len(urls)][person.member]  # the same one when there is one
        async with gate:
            body, _ = dm_body(slack, first, person, texts[i])  # ts = now: a person's messages stay in order
            started = time.perf_counter()
            status = await post(session, first, body)
            acks.append(time.perf_counter() - started)
            statuses.append(status)
            if (i + 1) % REDELIVER_EVERY == 0:  # same event_id, X-Slack-Retry-Num: 1
                statuses.append(await post(session, other, body, retry=True))

    connector = aiohttp.TCPConnector(limit=args.inflight * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        t0 = time.time()
        await asyncio.gather(*(send(session, i) for i in range(args.messages)))
    expected = [f"re: {text}" for text in texts]
    await wait_replies(slack, expected, DEADLINE)
    await asyncio.sleep(SETTLE)
    seen = replies(slack)
    answered = [min(seen[want]) for want in expected if seen.get(want)]
    wanted = set(expected)
    return {
        "t0": t0, "answered": answered, "statuses": statuses, "acks": acks,
        "lost": sum(not seen.get(want) for want in expected),
        "duplicates": sum(max(0, len(seen.get(want, [])) - 1) for want in expected),
        "unexpected": sum(1 for text, times in seen.items() if text not in wanted for t in times if t >= t0),
    }


def measure(name: str, webs: int, pools: int, admin_dsn: str, args: argparse.Namespace) -> Outcome:
    """Start one configuration on a fresh database, warm it up, run the load, tear it down."""
    database = f"teammates_bench_{uuid.uuid4().hex[:10]}"
    postgres_admin(admin_dsn, f'CREATE DATABASE "{database}"')
    stack = Stack(f"scaleout-{name}")
    try:
        stack.start_redis()
        stack.start_slack(MEMBERS)
        stack.start_llm(args.llm_delay)
        people = stack.add_people(args.people, list(MEMBERS))
        warm = stack.add_people(pools * args.workers_per_pool, list(MEMBERS), prefix="W")
        stack.configure(CONFIG, make_url(admin_dsn).set(database=database).render_as_string(hide_password=False))
        stack.cli("migrate")
        urls = []
        for i in range(webs):
            port = free_port()
            stack.teammates(f"web{i}", "serve", "--host", "127.0.0.1", "--port", str(port))
            urls.append(f"http://127.0.0.1:{port}")
        for i in range(pools):
            stack.teammates(f"pool{i}", "worker", "--concurrency", str(args.workers_per_pool))
        for i, url in enumerate(urls):
            stack.wait_healthy(f"web{i}", url)
        stack.wait_workers(pools * args.workers_per_pool)
        log(f"{name}: {webs} serve + {pools} pool(s) of {args.workers_per_pool} on PostgreSQL; warm-up, then "
            f"{args.messages} DMs from {args.people} people, {args.inflight} in flight")
        asyncio.run(warm_up(stack, urls, warm))
        assert stack.llm is not None
        calls_before = len(stack.llm.requests)
        before = cpu_snapshot(stack, database)
        result = asyncio.run(load(stack, urls, people, args))
        after = cpu_snapshot(stack, database)
        answered = result["answered"]
        wall = max(answered) - result["t0"] if answered else float("nan")
        ack = summary(result["acks"])
        return Outcome(
            name=name, web_processes=webs, workers=pools * args.workers_per_pool, messages=args.messages,
            redeliveries=args.messages // REDELIVER_EVERY, wall_s=wall, replies_per_s=len(answered) / wall,
            lost=result["lost"], duplicates=result["duplicates"], unexpected=result["unexpected"],
            llm_calls=len(stack.llm.requests) - calls_before,
            non_200=sum(status != 200 for status in result["statuses"]),
            ack_ms={"p50": ack["p50"] * 1000, "p95": ack["p95"] * 1000, "max": ack["max"] * 1000},
            cpu_ms_per_reply=per_reply_cpu(before, after, len(answered)),
            machine_busy=(after["machine"] - before["machine"]) / ((after["clock"] - before["clock"]) * (os.cpu_count() or 1)),
        )
    finally:
        stack.close()
        postgres_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def measure_both(args: argparse.Namespace) -> list[Outcome]:
    """Configuration A (1 serve + 1 pool), then B (2 + 2), each on a fresh database."""
    dsn = admin_url()
    return [measure("A", 1, 1, dsn, args), measure("B", 2, 2, dsn, args)]


def per_reply_cpu(before: dict[str, float], after: dict[str, float], replies: int) -> dict[str, float]:
    spent = {group: after[group] - before[group] for group in ("serve", "workers", "redis", "postgres", "bench", "machine")}
    spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
    return {group: seconds * 1000 / max(1, replies) for group, seconds in spent.items()}


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    a, b = outcomes
    ratio = b.replies_per_s / a.replies_per_s
    if args.json:
        print(json.dumps({"llm_delay": args.llm_delay, "inflight": args.inflight, "cpus": os.cpu_count(),
                          "configurations": [asdict(o) for o in outcomes], "throughput_ratio_b_over_a": ratio}, indent=2))
        return
    print(f"PostgreSQL; {args.messages} DMs from {args.people} people, {args.inflight} in flight, every "
          f"{REDELIVER_EVERY}th redelivered to the other web process; LLM fake answers after {args.llm_delay:g} s")
    print(f"{'config':<7} {'serve':>5} {'workers':>7} {'wall s':>7} {'replies/s':>10} {'lost':>5} {'dup':>4} "
          f"{'other':>6} {'LLM calls':>10} {'non-200':>8} {'ack p50 ms':>11} {'ack p95 ms':>11}")
    for o in outcomes:
        print(f"{o.name:<7} {o.web_processes:>5} {o.workers:>7} {o.wall_s:>7.2f} {o.replies_per_s:>10.1f} {o.lost:>5} "
              f"{o.duplicates:>4} {o.unexpected:>6} {o.llm_calls:>10} {o.non_200:>8} {o.ack_ms['p50']:>11.1f} "
              f"{o.ack_ms['p95']:>11.1f}")
    for o in outcomes:
        cpu = o.cpu_ms_per_reply
        print(f"{o.name}: CPU ms per reply: serve {cpu['serve']:.0f}, workers {cpu['workers']:.0f}, "
              f"PostgreSQL {cpu['postgres']:.0f}, redis {cpu['redis']:.0f}, fakes+load {cpu['bench']:.0f}, "
              f"anything else on the machine {cpu['other']:.0f}; "
              f"total {cpu['machine']:.0f}; {os.cpu_count()} CPUs {o.machine_busy:.0%} busy during the load")
    ideal = args.messages * args.llm_delay
    print(f"throughput B/A = {ratio:.2f} (2.0 = linear; floor set by the LLM fake alone: "
          f"A {ideal / a.workers:.1f} s, B {ideal / b.workers:.1f} s)")
    for o in outcomes:
        if o.machine_busy > 0.85:
            cpu = o.cpu_ms_per_reply
            ours = o.machine_busy * (cpu["machine"] - cpu["other"]) / cpu["machine"]
            print(f"{o.name}: the CPUs were {o.machine_busy:.0%} busy ({ours:.0%} by this benchmark): its replies/s "
                  "may be bounded by this machine's CPUs rather than by the number of processes")


def sound(outcomes: list[Outcome], _args: argparse.Namespace) -> bool:
    """No reply lost or duplicated, nothing unexpected posted, every request acked with 200."""
    return all(o.ok for o in outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="DMs per configuration (default 400)")
    parser.add_argument("--people", type=int, default=40, help="distinct senders, round-robin (default 40)")
    parser.add_argument("--workers-per-pool", type=int, default=8, help="--concurrency of each worker pool (default 8)")
    parser.add_argument("--llm-delay", type=float, default=0.2, help="seconds the LLM fake takes per call (default 0.2)")
    parser.add_argument("--inflight", type=int, default=32, help="requests in flight at most (default 32)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    return run_bench(parser, measure_both, report, sound)


if __name__ == "__main__":
    sys.exit(main())
