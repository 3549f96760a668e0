"""Shared rig of the workflow-engine benchmarks (engine_throughput, schedule_lateness,
resume_latency).

Why a module of its own: all three need the same things that bench/_stack.py does not give: a
database that `teammates migrate` made and the config seeded (the workflows and runs are
created in-process, through the product's own storage and engine functions, so that setting
up thousands of them is not a measurement of the CLI), `teammates worker` pools on the
`workflows` queue, plain RQ `SimpleWorker` pools as the baseline, and UTC arithmetic on the
timestamps the product and RQ record. Process handling, redis-server and clean-up are
bench/_stack.py's `Stack` (subclassed, not copied), so every process is stopped and the temp
dir deleted even on errors; the small helpers and `main()` are bench/_util.py's.

Timing rests on timestamps written where the work happens, never on the bench's polling: the
product's `started_at` / `finished_at` columns (UTC, written by the worker processes) and RQ's
`job.started_at` / `job.ended_at` (UTC). All processes share this machine's clock.

The database is SQLite in the temp dir, or with `database="postgres"` a fresh database on the
local cluster started by scripts/postgres.sh (dropped again by `close()`).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from _stack import ROOT, Stack, postgres_admin
from _util import log, pct, wait_until
from rq.job import Job
from sqlalchemy.engine import make_url

from jobs.runtime import Runtime
from jobs.workflows.definition import as_document, load_definition
from storage import workflows as store
from storage.db import Database
from teammates.config import LoadedConfig, load
from teammates.runtime import prepare_database

__all__ = ["CONFIG", "ROOT", "EngineStack", "add_workflows", "as_utc", "job_times", "poll", "stats"]

#: One member, UTC as the workspace zone (cron slots are then plain UTC), no Slack: the
#: benchmarked steps (`current_time`, approvals) never reach a platform.
CONFIG = """\
workspace: {name: Bench BV, locale: en-GB, timezone: UTC, currency: EUR}
members:
  - {id: nova, name: Nova, role: Bench, tools: [current_time]}
"""

RAW_REDIS_DB = 1  # the plain-RQ baseline's own Redis database: its workers never meet the product's


def poll(check: Callable[[], bool], what: str, timeout: float, interval: float = 0.2) -> None:
    """Like _util.wait_until, but gentler: the checks here are database queries or many Redis
    reads, and they share the CPUs with the workers being measured."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time the product stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stats(seconds: Iterable[float], percentiles: Iterable[int]) -> dict[str, float]:
    """Nearest-rank percentiles, min and max, in milliseconds (every figure a real observation)."""
    ordered = sorted(s * 1000 for s in seconds)
    out: dict[str, float] = {"n": len(ordered), "min_ms": ordered[0] if ordered else float("nan")}
    for p in percentiles:
        out[f"p{p}_ms"] = pct(ordered, p)
    out["max_ms"] = ordered[-1] if ordered else float("nan")
    return out


async def add_workflows(db: Database, texts: Iterable[str], batch: int = 500) -> int:
    """Apply workflow definitions the way `teammates workflow apply` does (validate, then
    `storage.workflows.apply`), `batch` per transaction; returns how many were applied."""
    documents = [as_document(load_definition(text)) for text in texts]
    for start in range(0, len(documents), batch):
        async with db.session() as session:
            for document in documents[start:start + batch]:
                await store.apply(session, document)
    return len(documents)


class EngineStack(Stack):
    """redis-server, a migrated and seeded database, the config; worker pools on demand."""

    def __init__(self, name: str, database: str = "sqlite") -> None:
        super().__init__(name)
        if database not in ("sqlite", "postgres"):
            raise ValueError(f"database: sqlite or postgres, not {database!r}")
        self.database = database
        self.database_url = ""
        self._postgres_admin = ""
        self.loaded: LoadedConfig | None = None

    # ------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Start Redis, create the database, write the config, run `teammates migrate`."""
        self.start_redis()
        self.database_url = self._create_database()
        self.configure(CONFIG, self.database_url)
        self.cli("migrate")
        self.loaded = load(str(self.config), env=self.env)

    async def open_db(self) -> Database:
        """A Database for this event loop, with the workspace and members seeded (as any
        `teammates` command would) so that workflows can name their member."""
        assert self.loaded is not None
        db = Database(self.database_url)
        await prepare_database(self.loaded, db)
        return db

    def runtime(self, db: Database) -> Runtime:
        """What `jobs.runs.approvals.decide` needs, built like tests/test_workflows.py `runtime()`."""
        assert self.loaded is not None
        return Runtime(loaded=self.loaded, db=db, channels=lambda *_: None,  # type: ignore[arg-type,return-value]
                       redis=redis.Redis.from_url(self.redis_url))

    @property
    def raw_redis_url(self) -> str:
        return self.redis_url.rsplit("/", 1)[0] + f"/{RAW_REDIS_DB}"

    # ------------------------------------------------------------ workers

    def engine_workers(self, concurrency: int, queues: str = "workflows") -> None:
        """`teammates worker`: a SimpleWorker pool with RQ's scheduler; waits until registered."""
        self.teammates("engine-workers", "worker", "--queues", queues, "--concurrency", str(concurrency))
        self.wait_workers(concurrency)

    def raw_workers(self, count: int, queue: str, burst: bool) -> subprocess.Popen[bytes]:
        """Plain `rq worker-pool` of SimpleWorkers (the product's worker class) on the raw DB."""
        argv = [sys.executable, "-m", "rq.cli", "worker-pool", "-w", "rq.worker.SimpleWorker", "-n", str(count),
                "-u", self.raw_redis_url, "-l", "WARNING", *(["--burst"] if burst else []), queue]
        return self.spawn("raw-workers", argv, self.env)

    def wait_raw_workers(self, count: int, timeout: float = 60.0) -> None:
        client = redis.Redis.from_url(self.raw_redis_url)
        wait_until(lambda: client.scard("rq:workers") == count, f"{count} plain RQ workers", timeout)

    # ------------------------------------------------------------ database

    def _create_database(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self.tmp}/teammates.db"
        admin = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh")], capture_output=True, text=True, check=True)
        self._postgres_admin = admin.stdout.strip().splitlines()[-1]
        url = make_url(self._postgres_admin)
        if url.host not in ("127.0.0.1", "localhost"):
            raise RuntimeError(f"refusing a PostgreSQL server that is not local: {url.host}")
        name = f"teammates_bench_{uuid.uuid4().hex[:10]}"
        postgres_admin(self._postgres_admin, f'CREATE DATABASE "{name}"')
        return url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        super().close()
        if self._postgres_admin and self.database_url:
            name = make_url(self.database_url).database
            try:
                postgres_admin(self._postgres_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - clean-up must not hide the real error
                log(f"could not drop {name}: {exc}")


def job_times(connection: redis.Redis, job_ids: list[str]) -> list[dict[str, Any]]:
    """started_at / ended_at of RQ jobs (None where a job is gone or not started)."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(job_ids), 500):
        for job in Job.fetch_many(job_ids[start:start + 500], connection=connection):
            out.append({"started_at": job.started_at if job else None, "ended_at": job.ended_at if job else None})
    return out
