"""Shared rig of the Slack benchmarks (bench/ack.py, bench/concurrency.py, bench/scaleout.py).

Why a module of its own: all three start the same things (redis-server, FakeSlack, a temp
config, `teammates` subprocesses, signed events); concurrency and scaleout also start
FakeAnthropic, workers and many people, and judge a run by the replies that land in the Slack
fake. `Stack` is also what bench/_engine_stack.py subclasses. The small helpers (percentiles,
logging, polling) are bench/_util.py's, shared with every other bench.

Timing rests on one fact of FakeSlack: a posted message's `ts` is the wall clock in microseconds
when the fake stored it (`time.time_ns() // 1000`, bumped by 1 µs on a tie). The fake runs in
this process, so `float(ts) - time.time()`-at-send is the event-to-reply time, without a
polling delay.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis
from _util import healthy, pct, pings, wait_until

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import CASEY, NOVA, free_port  # noqa: E402
from tests.fakes.anthropic_api import FakeAnthropic, Reply  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.fakes.slack_driver import SlackDriver, new_ts, rich_text_blocks  # noqa: E402

__all__ = ["MEMBERS", "ROOT", "Creds", "Person", "Stack", "busy_cpu_seconds", "dm_body", "echo", "free_port", "post", "postgres_admin", "replies", "summary", "wait_replies"]

Creds = dict[str, str]  # {"token", "secret", "user", "bot"}, shaped like tests/conftest.py's NOVA

#: The two members of tests/conftest.py's CONFIG.
MEMBERS: dict[str, Creds] = {"nova": NOVA, "casey": CASEY}


def echo(delay: float) -> Callable[[dict[str, Any]], Reply]:
    """A FakeAnthropic responder answering `re: <message>` after `delay` seconds.

    Why: a reply must name the message it answers, or lost and duplicate replies cannot be told
    apart. A turn joins consecutive lines of one role with blank lines, so only the last
    paragraph of the last user message is this turn's own message (as tests/test_capacity.py)."""

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last if b.get("type") == "text")
        return Reply(text=f"re: {text.split(chr(10) * 2)[-1]}", delay=delay)

    return respond


@dataclass(frozen=True)
class Person:
    """A human in the fake workspace and the DM they have with one member."""

    user: str
    member: str
    channel: str


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL whatever is left of the process's own group.

    Why the group: `teammates run` and `teammates worker --concurrency N` have children (worker
    pools, forked workers); every spawn below starts a new session, so its group is exactly
    the tree we started and nothing else."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers only; a no-op error when all are gone
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


class Stack:
    """One temp dir with redis-server, the fakes, a config and `teammates` processes.

    Everything on 127.0.0.1; `close()` stops it all and deletes the dir."""

    def __init__(self, name: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"teammates-bench-{name}-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.slack: FakeSlack | None = None
        self.bots: dict[str, Creds] = {}
        self.llm: FakeAnthropic | None = None
        self.redis_url = ""
        self.env: dict[str, str] = {}
        self.config = self.tmp / "teammates.yml"

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        # A session of its own: Ctrl-C reaches only us, and stop_group() can clean up the tree.
        proc = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=out, stderr=out, start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def logs(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def teammates(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "teammates", "--config", str(self.config), *args], self.env)

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "teammates", "--config", str(self.config), *args],
                              cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"teammates {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def stop(self, name: str) -> None:
        stop_group(self.procs.pop(name))

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        for fake in (self.slack, self.llm):
            if fake is not None:
                fake.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ services

    def start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        port = free_port()
        (self.tmp / "redis").mkdir()
        self.spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(self.tmp / "redis")])
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: pings(redis.Redis.from_url(self.redis_url)), "redis-server")
        return self.redis_url

    def start_slack(self, bots: dict[str, Creds]) -> FakeSlack:
        """FakeSlack with one bot per member (member id -> credentials)."""
        self.slack = FakeSlack().start()
        self.bots = bots
        for member, creds in bots.items():
            self.slack.add_bot(creds["token"], creds["user"], creds["bot"], member)
        return self.slack

    def start_llm(self, delay: float) -> FakeAnthropic:
        self.llm = FakeAnthropic().start()
        self.llm.set_responder(echo(delay))
        return self.llm

    def add_people(self, count: int, members: list[str], prefix: str = "P") -> list[Person]:
        """`count` humans; person i DMs members[i % len(members)] in an IM of their own."""
        assert self.slack is not None
        people = []
        for i in range(count):
            member = members[i % len(members)]
            user = f"U0{prefix}{i:06d}"
            channel = f"D0{prefix}{i:06d}"
            self.slack.add_user(user, f"{prefix.lower()}{i}", real_name=f"Person {prefix}{i}")
            self.slack.add_im(channel, user, self.bots[member]["user"])
            people.append(Person(user, member, channel))
        return people

    def configure(self, config: str, database_url: str) -> None:
        """Write the config and the environment every `teammates` process gets.

        The credentials of member `m` go in `M_SLACK_BOT_TOKEN` / `M_SLACK_SIGNING_SECRET`,
        the names the config's `${...}` use. Inherited SLACK_/ANTHROPIC_/TEAMMATES_ (and
        NOVA_/CASEY_) variables are dropped: a developer's real ones must never reach a benchmark."""
        self.config.write_text(config)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "ANTHROPIC_", "TEAMMATES_", "NOVA_", "CASEY_"))}
        env.update({
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_url,
            "SLACK_API_URL": self.slack.base_url if self.slack else "http://127.0.0.1:9/api/",
            "ANTHROPIC_BASE_URL": self.llm.base_url if self.llm else "http://127.0.0.1:9/",
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            # the tests' config serves /metrics on its own port, with a token
            "TEAMMATES_METRICS_PORT": str(free_port()),
            "TEAMMATES_METRICS_TOKEN": "bench-metrics-token",
        })
        for member, creds in self.bots.items():
            env[f"{member.upper()}_SLACK_BOT_TOKEN"] = creds["token"]
            env[f"{member.upper()}_SLACK_SIGNING_SECRET"] = creds["secret"]
        self.env = env

    def wait_healthy(self, name: str, url: str, timeout: float = 60.0) -> None:
        try:
            wait_until(lambda: healthy(url), f"{name} on {url}", timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.logs(name)}") from None

    def wait_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` RQ workers are registered: before that, a burst measures start-up."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            wait_until(lambda: client.scard("rq:workers") == count, f"{count} RQ workers", timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} (registered: {client.scard('rq:workers')})") from None

    def driver(self, url: str, member: str) -> SlackDriver:
        """Signs requests like Slack does for `member`'s route on the web process at `url`."""
        creds = self.bots[member]
        return SlackDriver(f"{url}/slack/{member}/events", creds["secret"], bot_user_id=creds["user"])

    def drivers(self, url: str) -> dict[str, SlackDriver]:
        return {member: self.driver(url, member) for member in self.bots}


# ---------------------------------------------------------------- events and replies


def dm_body(slack: FakeSlack, target: SlackDriver, person: Person, text: str) -> tuple[bytes, str]:
    """A `message.im` envelope from `person` (body, event_id), also stored in the Slack fake.

    Stored because a person's message exists in Slack before its event is sent: the :eyes:
    reaction the worker adds must find it. Signing is left to `post`, at send time."""
    ts = new_ts()
    event: dict[str, Any] = {"user": person.user, "type": "message", "ts": ts, "client_msg_id": str(uuid.uuid4()),
             "text": text, "team": FakeSlack.team_id, "blocks": rich_text_blocks(text),
             "channel": person.channel, "event_ts": ts, "channel_type": "im"}
    slack.add_message(person.channel, person.user, text, ts=ts, blocks=event["blocks"])
    envelope = target.event_envelope(event)
    return json.dumps(envelope).encode(), str(envelope["event_id"])


async def post(session: aiohttp.ClientSession, target: SlackDriver, body: bytes, retry: bool = False) -> int:
    """Sign and POST one event; the HTTP status, or 0 on a connection error or timeout."""
    data, headers = target.build(body, "application/json", retry_num=1 if retry else None)
    try:
        async with session.post(target.url, data=data, headers=headers) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def replies(slack: FakeSlack) -> dict[str, list[float]]:
    """Text -> post times (epoch seconds, from the fake's time-based ts) of every bot post."""
    out: dict[str, list[float]] = defaultdict(list)
    for message in slack.all_posts():
        out[str(message.get("text", ""))].append(float(message["ts"]))
    return out


async def wait_replies(slack: FakeSlack, expected: Iterable[str], within: float) -> dict[str, list[float]]:
    """Poll until every expected text was posted at least once, or `within` seconds pass.

    Twice a second only: `all_posts()` deep-copies every post (~14 ms at 500 posts) on the
    CPUs the product runs on, and the reply times come from the ts anyway, not from the poll."""
    wanted = set(expected)
    deadline = time.monotonic() + within
    while True:
        seen = replies(slack)
        if wanted <= seen.keys() or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


def summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/max (nearest rank, every figure a real observation) of durations, in seconds."""
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50": pct(ordered, 50), "p95": pct(ordered, 95),
            "max": ordered[-1] if ordered else float("nan")}


def postgres_admin(url: str, sql: str) -> None:
    """Run one statement (CREATE / DROP DATABASE) as the cluster admin at `url`.

    asyncpg is imported here, not at the top: only the PostgreSQL runs need it."""
    import asyncpg

    async def execute() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute())


def busy_cpu_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot, all CPUs together.

    Why: everything (product, fakes, load, and whatever else runs) shares these CPUs; a busy
    share near 100% during a measurement means the figures are the machine's, not the design's."""
    times = psutil.cpu_times()
    return sum(getattr(times, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq", "steal"))
