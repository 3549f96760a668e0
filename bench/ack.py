"""Slack ack latency of `teammates serve` against a bare slack-bolt app, same load, same run.

Why: Slack redelivers any event not acked within 3 s, and teammates acks only after the
event is recorded in the database (its turn job is enqueued in Redis right after the ack).
This measures what that durable hand-off costs over a Bolt app that only acks
(bench/bare_bolt.py), with both targets hit by the same open-loop load in alternating blocks
so machine noise lands on both alike. Since the enqueue follows the ack, the bench also checks
that every acked event did become a queued job, and how long after the load the last one took.

Everything runs on 127.0.0.1: redis-server, FakeSlack (Bolt calls auth.test on the first
request), SQLite in a temp dir, `teammates serve` and the bare app as subprocesses.

    .venv/bin/python bench/ack.py [--rate 200] [--seconds 10] [--warmup 2] [--block 1] [--json]

Exit status 1 when a request failed or the queued jobs do not match the acks (the figures
are then suspect); the latency ratio itself is reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis
from _stack import MEMBERS, ROOT, Stack, free_port
from _util import log, pct, run_bench

from tests.conftest import ANA, CONFIG, NOVA, NOVA_DM
from tests.fakes.slack_driver import SlackDriver, new_ts, rich_text_blocks

LATE_MS = 5.0
TARGETS = ("bare", "teammates")


@dataclass
class Stats:
    """What one target saw during the measured blocks."""

    latencies: list[float] = field(default_factory=list)  # seconds, 200 responses only
    bad_status: int = 0
    errors: int = 0
    late: int = 0
    max_late: float = 0.0
    acked_total: int = 0  # 200s including warm-up: every one is a queued job for teammates
    warmup_failures: int = 0  # non-200s and errors during the warm-up, reported, not hidden

    def row(self) -> dict[str, Any]:
        ms = sorted(x * 1000 for x in self.latencies)
        return {
            "n": len(ms),
            "p50_ms": pct(ms, 50),
            "p90_ms": pct(ms, 90),
            "p99_ms": pct(ms, 99),
            "max_ms": ms[-1] if ms else float("nan"),
            "non_200": self.bad_status,
            "errors": self.errors,
            "late_gt_5ms": self.late,
            "max_late_ms": self.max_late * 1000,
            "warmup_failures": self.warmup_failures,
        }


# ---------------------------------------------------------------- processes


class Rig(Stack):
    """bench/_stack.py's Stack with this bench's two targets: `teammates serve` and the bare app.

    Why a subclass: redis-server, FakeSlack, the config and environment, `teammates migrate`,
    spawning and stopping are the Stack's; only the targets and Ana's DM with Nova are ack's."""

    def __init__(self) -> None:
        super().__init__("ack")
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        self.start_redis()
        slack = self.start_slack(MEMBERS)
        slack.add_user(ANA, "ana", real_name="Ana de Vries", email="ana@acme.test")
        slack.add_im(NOVA_DM, ANA, NOVA["user"])
        # No FakeAnthropic: `serve` never calls the LLM, so ANTHROPIC_BASE_URL points nowhere.
        self.configure(CONFIG, f"sqlite:///{self.tmp}/teammates.db")
        self.cli("migrate")
        for name in TARGETS:
            port = free_port()
            self.urls[name] = f"http://127.0.0.1:{port}"
            if name == "teammates":
                self.teammates(name, "serve", "--host", "127.0.0.1", "--port", str(port))
            else:
                self.spawn(name, [sys.executable, str(ROOT / "bench" / "bare_bolt.py"), "--port", str(port),
                                  "--token", NOVA["token"], "--secret", NOVA["secret"], "--api-url", slack.base_url])
        for name, url in self.urls.items():
            self.wait_healthy(name, url, timeout=30.0)

    def queued_turns(self, expected: int, wait: float = 10.0) -> tuple[int, float]:
        """Turn jobs in Redis once `expected` are there or `wait` seconds passed (the enqueue
        follows the ack); the count and the seconds it took after the load ended."""
        client = redis.Redis.from_url(self.redis_url)
        started = time.perf_counter()
        while True:
            queued = int(client.llen("rq:queue:turns"))
            elapsed = time.perf_counter() - started
            if queued >= expected or elapsed > wait:
                return queued, elapsed
            time.sleep(0.01)


# ---------------------------------------------------------------- load


def dm_request(driver: SlackDriver) -> tuple[bytes, dict[str, str]]:
    """A freshly signed `message.im` from Ana to Nova: unique ts and event_id."""
    ts = new_ts()
    text = "Can you check invoice 2041?"
    event = {
        "user": ANA, "type": "message", "ts": ts, "client_msg_id": str(uuid.uuid4()), "text": text,
        "team": driver.team_id, "blocks": rich_text_blocks(text), "channel": NOVA_DM,
        "event_ts": ts, "channel_type": "im",
    }
    return driver.build(json.dumps(driver.event_envelope(event)).encode(), "application/json")


async def one(session: aiohttp.ClientSession, driver: SlackDriver, scheduled: float, stats: Stats, counted: bool) -> None:
    body, headers = dm_request(driver)
    sent = time.perf_counter()
    try:
        async with session.post(driver.url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        if counted:
            stats.errors += 1
        else:
            stats.warmup_failures += 1
        return
    done = time.perf_counter()
    if status == 200:
        stats.acked_total += 1
    if not counted:
        stats.warmup_failures += status != 200
        return
    late = sent - scheduled
    stats.max_late = max(stats.max_late, late)
    stats.late += late * 1000 > LATE_MS
    if status == 200:
        stats.latencies.append(done - sent)
    else:
        stats.bad_status += 1


async def block(session: aiohttp.ClientSession, driver: SlackDriver, rate: float, seconds: float, stats: Stats, counted: bool) -> None:
    """Open loop: request i is launched at t0 + i/rate whether or not earlier ones answered;
    then wait for the stragglers so they do not overlap the other target's block."""
    t0 = time.perf_counter()
    tasks = []
    for i in range(round(rate * seconds)):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(session, driver, scheduled, stats, counted)))
    await asyncio.gather(*tasks)


async def load(urls: dict[str, str], rate: float, seconds: float, warmup: float, blk: float) -> dict[str, Stats]:
    drivers = {name: SlackDriver(f"{url}/slack/nova/events", NOVA["secret"], bot_user_id=NOVA["user"]) for name, url in urls.items()}
    stats = {name: Stats() for name in urls}
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for phase, total, counted in (("warm-up", warmup, False), ("measuring", seconds, True)):
            log(f"{phase}: {total:g} s per target at {rate:g}/s in alternating {blk:g} s blocks")
            done = 0.0
            while done < total - 1e-9:
                length = min(blk, total - done)
                for name in TARGETS:
                    await block(session, drivers[name], rate, length, stats[name], counted)
                done += length
    return stats


# ---------------------------------------------------------------- report


Result = tuple[dict[str, Stats], int, float]


def measure(args: argparse.Namespace) -> Result:
    """Start the rig, run the load; each target's Stats, how many turn jobs are queued and how
    long after the load the last of them took to appear."""
    rig = Rig()
    try:
        log(f"starting redis-server, FakeSlack, teammates serve and the bare app in {rig.tmp}")
        rig.start()
        stats = asyncio.run(load(rig.urls, args.rate, args.seconds, args.warmup, args.block))
        return stats, *rig.queued_turns(stats["teammates"].acked_total)
    finally:
        rig.close()


def report(result: Result, args: argparse.Namespace) -> None:
    stats, queued, settle = result
    rows = {name: s.row() for name, s in stats.items()}
    ratio = {p: rows["teammates"][p] / rows["bare"][p] if rows["bare"][p] else float("nan") for p in ("p50_ms", "p99_ms")}
    acked = stats["teammates"].acked_total
    if args.json:
        print(json.dumps({
            "rate": args.rate, "seconds": args.seconds, "warmup": args.warmup, "block": args.block,
            "schedule": "interleaved blocks, bare first", "targets": rows,
            "ratio_p50": ratio["p50_ms"], "ratio_p99": ratio["p99_ms"], "target_ratio": 1.5,
            "queued": queued, "acked_by_teammates": acked, "queued_within_s_after_load": settle,
        }, indent=2))
        return
    print(f"open loop, {args.rate:g} events/s, {args.seconds:g} s per target after {args.warmup:g} s warm-up; "
          f"targets interleaved in alternating {args.block:g} s blocks (bare first)")
    print(f"{'target':<10} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} {'late>5ms':>9}")
    for name, r in rows.items():
        errors = r["non_200"] + r["errors"]
        print(f"{name:<10} {r['n']:>6} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {errors:>7} {r['late_gt_5ms']:>9}")
    for name, r in rows.items():
        if r["non_200"] or r["errors"] or r["warmup_failures"]:
            print(f"{name}: {r['non_200']} non-200 response(s), {r['errors']} connection error(s)/timeout(s), "
                  f"{r['warmup_failures']} failure(s) during warm-up")
    print(f"ratio p99 teammates/bare = {ratio['p99_ms']:.2f} (target <= 1.5)")
    print(f"ratio p50 teammates/bare = {ratio['p50_ms']:.2f} (target <= 1.5)")
    print(f"queued: {queued} of {acked} (rq:queue:turns vs events acked by teammates, warm-up included), "
          f"{settle * 1000:.0f} ms after the load ended")


def sound(result: Result, _args: argparse.Namespace) -> bool:
    """No request failed and every event teammates acked is a queued job."""
    stats, queued, _settle = result
    bad = any(s.bad_status or s.errors or s.warmup_failures for s in stats.values()) or queued != stats["teammates"].acked_total
    return not bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted warm-up seconds per target (default 2)")
    parser.add_argument("--block", type=float, default=1.0, help="length of each alternating block in seconds (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    return run_bench(parser, measure, report, sound)


if __name__ == "__main__":
    sys.exit(main())
