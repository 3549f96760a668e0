"""Test harness: real redis-server, real `teammates serve` / `teammates worker` processes,
and fakes for Slack and Anthropic reached over HTTP on 127.0.0.1.

The database is SQLite in a temporary folder, or a fresh PostgreSQL database per test when
TEAMMATES_TEST_POSTGRES is set (e.g. postgresql://teammates:teammates@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.fakes.smtp_server import SmtpSink

from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_driver import SlackDriver

ROOT = Path(__file__).resolve().parent.parent

NOVA = {"token": "xoxb-nova-0001", "secret": "nova-signing-secret", "user": "U0NOVA0001", "bot": "B0NOVA0001"}
CASEY = {"token": "xoxb-casey-0001", "secret": "casey-signing-secret", "user": "U0CASEY001", "bot": "B0CASEY001"}
ANA = "U0ANA00001"
BOB = "U0BOB00001"
GENERAL = "C0GENERAL1"
NOVA_DM = "D0NOVAANA1"
CASEY_DM = "D0CASEYANA"

CONFIG = """\
workspace: {name: Acme BV, locale: en-GB, timezone: Europe/Amsterdam, currency: EUR}
llm: {model: claude-test-model, timeout: 5, max_retries: 1, max_iterations: 4}
workers: {step_lease: 3, reconcile_every: 1, channel_post_interval: 0}
server: {metrics: {port: "${TEAMMATES_METRICS_PORT}", token: "${TEAMMATES_METRICS_TOKEN}"}}
people:
  - {id: ana, name: Ana, slack: U0ANA00001, email: ana@acme.test}
admins: [ana]
members:
  - id: nova
    name: Nova
    role: Finance & Admin
    description: Tracks invoices and payments, sends reminders.
    persona: Professional but friendly. Always confirm before contacting clients.
    tools: [get_thread_history, lookup_user, post_message]
    slack:
      bot_token: ${NOVA_SLACK_BOT_TOKEN}
      signing_secret: ${NOVA_SLACK_SIGNING_SECRET}
  - id: casey
    name: Casey
    role: Sales & Leads
    tools: [lookup_user]
    # A team room (any member's approvals or activity channel): posts there stay inside the team
    # (autonomy). Not an activity channel, so no test but the feed's sees feed lines.
    channels: {approvals: C0GENERAL1}
    slack:
      bot_token: ${CASEY_SLACK_BOT_TOKEN}
      signing_secret: ${CASEY_SLACK_SIGNING_SECRET}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run the README's test command (it installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: _pings(client), what="redis-server")
    yield url
    proc.terminate()
    proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_url(redis_server: str) -> str:
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database brought to the newest schema by `teammates migrate` (the real command, in
    its own process), once per session: each test's database is a copy of it. Migrating each
    test's database anew cost every test a Python start-up and the whole Alembic history.

    SQLite: the path of the migrated file. PostgreSQL: the name of the migrated database, a
    template for CREATE DATABASE."""
    workdir = tmp_path_factory.mktemp("template")
    (workdir / "teammates.yml").write_text(CONFIG)
    base = os.environ.get("TEAMMATES_TEST_POSTGRES")
    if base:
        from sqlalchemy.engine import make_url

        name = f"teammates_tmpl_{uuid.uuid4().hex[:10]}"
        asyncio.run(_postgres_admin(base, f'CREATE DATABASE "{name}"'))
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    else:
        name = str(workdir / "template.db")
        url = f"sqlite:///{name}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEAMMATES_", "DATABASE_"))}
    migrated = subprocess.run([sys.executable, "-m", "teammates", "migrate"], cwd=workdir, capture_output=True, text=True, timeout=120,
                              env={**env, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0",
                                   "TEAMMATES_METRICS_PORT": str(free_port()), "TEAMMATES_METRICS_TOKEN": "metrics-test-token"})
    assert migrated.returncode == 0, migrated.stderr
    yield name
    if base:
        asyncio.run(_drop_database(base, name))


@pytest.fixture
def database_url(tmp_path: Path, migrated_template: str) -> Iterator[str]:
    """A database of this test's own, already migrated (a copy of `migrated_template`)."""
    base = os.environ.get("TEAMMATES_TEST_POSTGRES")
    if not base:
        # `teammates migrate` has exited: its connections are closed and the WAL checkpointed
        # into the file; copy whatever is there.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(migrated_template + suffix):
                shutil.copyfile(migrated_template + suffix, tmp_path / f"test.db{suffix}")
        yield f"sqlite:///{tmp_path}/test.db"
        return
    from sqlalchemy.engine import make_url

    name = f"teammates_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_from_template(base, name, migrated_template))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_drop_database(base, name))


async def _create_from_template(url: str, name: str, template: str) -> None:
    """CREATE DATABASE ... TEMPLATE needs the template to have no other connections; an
    autovacuum worker may be on it for a moment (like in `_drop_database`): try again."""
    import asyncpg

    for attempt in range(20):
        try:
            await _postgres_admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            return
        except asyncpg.ObjectInUseError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


async def _drop_database(url: str, name: str) -> None:
    """DROP ... WITH (FORCE) ends our own leftover connections, but it may not end an
    autovacuum worker (a superuser's process) that has just started on the database: seen once
    in CI as InsufficientPrivilegeError. That worker finishes in moments, so try again."""
    import asyncpg

    for attempt in range(20):
        try:
            await _postgres_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


async def _postgres_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    fake.add_bot(NOVA["token"], NOVA["user"], NOVA["bot"], "nova")
    fake.add_bot(CASEY["token"], CASEY["user"], CASEY["bot"], "casey")
    fake.add_user(ANA, "ana", real_name="Ana de Vries", email="ana@acme.test")
    fake.add_user(BOB, "bob", real_name="Bob Jansen", email="bob@acme.test")
    fake.add_channel(GENERAL, "general", [ANA, BOB, NOVA["user"], CASEY["user"]])
    fake.add_im(NOVA_DM, ANA, NOVA["user"])
    fake.add_im(CASEY_DM, ANA, CASEY["user"])
    yield fake
    fake.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps every email it is sent."""
    from tests.fakes.smtp_server import SmtpSink  # it imports this module (free_port)

    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def llm() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@dataclass
class Stack:
    """A running product: config on disk, `teammates serve` and workers as real processes."""

    workdir: Path
    env: dict[str, str]
    port: int
    slack: FakeSlack
    llm: FakeAnthropic
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape(self) -> str:
        """The web process's /metrics, read where an operator's Prometheus would: its own
        loopback listener (`server.metrics.port`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.env['TEAMMATES_METRICS_PORT']}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def cli(self, *args: str, input: str | None = None, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "teammates", *args],
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "teammates", *args], cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def start_web(self) -> None:
        self.start("web", "serve", "--host", "127.0.0.1", "--port", str(self.port))
        wait_until(self._healthy, timeout=30, what=f"teammates serve on {self.port}\n{self.logs('web')}")

    def start_worker(self, name: str = "worker") -> None:
        self.start(name, "worker")

    def up(self, workers: int = 1) -> Stack:
        self.start_web()
        for i in range(workers):
            self.start_worker(f"worker{i}" if i else "worker")
        return self

    def stop(self, name: str, sig: int = 15) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop_all(self) -> None:
        """Stop every process gracefully (SIGTERM), side by side: each one's grace period is no
        longer added to the next one's."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def kill_all(self) -> None:
        """End the test: SIGKILL every process and its children (RQ's scheduler, a pool's
        workers). Nothing is asserted after this; a graceful stop (SIGTERM) costs an idle
        worker ~1.5 s (RQ joins its scheduler, which sleeps 1 s between passes, and its pubsub
        thread) and is what `stop`/`stop_all` are for, in the tests that check it."""
        import psutil

        procs, self.procs = self.procs, {}
        tree: list[psutil.Process] = []
        for proc in procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(proc.pid)
                tree += [*parent.children(recursive=True), parent]
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        for proc in procs.values():  # our own children; grandchildren are reaped by init
            proc.wait(10)

    def logs(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def driver(self, member: str = "nova") -> SlackDriver:
        creds = NOVA if member == "nova" else CASEY
        return SlackDriver(f"{self.url}/slack/{member}/events", creds["secret"], bot_user_id=creds["user"], slack=self.slack)

    def _healthy(self) -> bool:
        return healthy(self.port)


def healthy(port: int) -> bool:
    """Does `teammates serve` (or `run`) on this port answer /healthz with 200?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_url: str, slack: FakeSlack, llm: FakeAnthropic) -> Iterator[Stack]:
    (tmp_path / "teammates.yml").write_text(CONFIG)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLACK_", "ANTHROPIC_", "TEAMMATES_", "NOVA_", "CASEY_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SLACK_API_URL": slack.base_url,
            "ANTHROPIC_BASE_URL": llm.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            "NOVA_SLACK_BOT_TOKEN": NOVA["token"],
            "NOVA_SLACK_SIGNING_SECRET": NOVA["secret"],
            "CASEY_SLACK_BOT_TOKEN": CASEY["token"],
            "CASEY_SLACK_SIGNING_SECRET": CASEY["secret"],
            "TEAMMATES_METRICS_PORT": str(free_port()),
            "TEAMMATES_METRICS_TOKEN": "metrics-test-token",
        }
    )
    s = Stack(workdir=tmp_path, env=env, port=free_port(), slack=slack, llm=llm)
    yield s
    s.kill_all()


def new_id() -> str:
    return uuid.uuid4().hex[:12]
