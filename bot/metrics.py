"""`/metrics`: the web process's own counters plus the capacity of the whole system, read from
Redis at scrape time (queue depth and age, busy/idle workers, turn latency), and the LLM's
tokens, cost and budgets, read from the database (cached a few seconds)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import select

from jobs import capacity
from jobs.spend import balances
from storage import performance, usage
from storage.db import Database
from storage.models import Member
from storage.performance import Performance
from storage.usage import Figures

log = logging.getLogger(__name__)


class CapacityCollector(Collector):
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        try:
            snap = capacity.snapshot(self.redis)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            return
        depth = GaugeMetricFamily("teammates_queue_depth", "Jobs waiting per queue", labels=["queue"])
        age = GaugeMetricFamily("teammates_queue_oldest_age_seconds", "Wait of the oldest queued job", labels=["queue"])
        for load in snap.queues:
            depth.add_metric([load.name], load.depth)
            age.add_metric([load.name], load.oldest_age)
        workers = GaugeMetricFamily("teammates_workers", "RQ workers by state", labels=["state"])
        workers.add_metric(["busy"], snap.busy_workers)
        workers.add_metric(["idle"], snap.idle_workers)
        latency = HistogramMetricFamily("teammates_turn_latency_seconds", "From message received to reply posted")
        latency.add_metric(
            [], [(capacity._bucket(bound), count) for bound, count in snap.turn_latency_buckets], snap.turn_latency_sum
        )
        yield from (depth, age, workers, latency)


CACHE_SECONDS = 5.0  # a scrape within this of the last one is answered from memory
READ_TIMEOUT = 2.0  # s: a slow database leaves the spend figures out of one scrape, no more


@dataclass(frozen=True)
class _Spend:
    members: dict[str, Figures]
    balances: list[balances.Balance]
    performance: dict[str, Performance]


PERFORMANCE_WINDOW = timedelta(days=30)


class SpendCollector(Collector):
    """LLM tokens and cost per member, and what each budget leaves, from the database.

    A scrape costs one grouped query over `llm_usage` and the budgets' few rows, at most once
    per `CACHE_SECONDS`. `collect` runs on a thread (`generate_latest` is called off the
    loop), so the read is handed to the web process's loop, which owns the database's
    connections, and waited for with a deadline."""

    def __init__(self, db: Database, zone: str, loop: asyncio.AbstractEventLoop) -> None:
        self.db = db
        self.zone = zone
        self.loop = loop
        self._cached: tuple[float, _Spend] | None = None
        self._lock = threading.Lock()

    async def _read(self) -> _Spend:
        async with self.db.session() as session:
            ids = list((await session.scalars(select(Member.id))).all())
            since = datetime.now(UTC) - PERFORMANCE_WINDOW
            return _Spend(await usage.by_member(session), await balances.current(session, self.zone),
                          await performance.of_members(session, ids, since, self.zone))

    def _spend(self) -> _Spend | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            if _on_a_loop():
                return self._cached[1] if self._cached else None  # on the loop's own thread: waiting would deadlock
            try:
                spend = asyncio.run_coroutine_threadsafe(self._read(), self.loop).result(READ_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is slow
                log.warning("spend figures left out of /metrics: %s", type(exc).__name__)
                return self._cached[1] if self._cached else None
            self._cached = (now, spend)
            return spend

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        spend = self._spend()
        if spend is None:
            return
        tokens = CounterMetricFamily("teammates_llm_tokens", "LLM tokens used per member and kind", labels=["member", "kind"])
        cost = CounterMetricFamily("teammates_llm_cost", "LLM cost per member, in llm.prices units", labels=["member"])
        calls = CounterMetricFamily("teammates_llm_calls", "LLM calls per member", labels=["member"])
        for member, f in sorted(spend.members.items()):
            for kind, value in (("input", f.input), ("output", f.output), ("cache_read", f.cache_read), ("cache_write", f.cache_write)):
                tokens.add_metric([member, kind], value)
            cost.add_metric([member], f.cost)
            calls.add_metric([member], f.calls)
        labels = ["scope", "metric", "period"]
        limit = GaugeMetricFamily("teammates_budget_limit", "A budget's limit this period", labels=labels)
        used = GaugeMetricFamily("teammates_budget_used", "A budget's settled use this period", labels=labels)
        left = GaugeMetricFamily("teammates_budget_left", "What a budget leaves this period (after calls in flight)", labels=labels)
        for b in spend.balances:
            key = [b.scope, b.metric, b.period]
            limit.add_metric(key, b.limit)
            used.add_metric(key, b.used)
            left.add_metric(key, b.left)
        yield from (tokens, cost, calls, limit, used, left)
        yield from _performance(spend.performance)


def _performance(found: dict[str, Performance]) -> Iterator[GaugeMetricFamily]:
    """Seed 003's per-member performance over the last 30 days."""
    tasks = GaugeMetricFamily("teammates_member_tasks_30d", "Runs and messages of the last 30 days, by outcome",
                              labels=["member", "outcome"])
    asked = GaugeMetricFamily("teammates_member_approvals_30d", "Approvals asked in the last 30 days, by outcome",
                              labels=["member", "outcome"])
    wait = GaugeMetricFamily("teammates_member_approval_wait_median_seconds", "Median time from asking to a decision (30 days)",
                             labels=["member"])
    daily = GaugeMetricFamily("teammates_member_cost_today", "LLM cost of the member today (workspace time zone)",
                              labels=["member"])
    for member, p in sorted(found.items()):
        tasks.add_metric([member, "done"], p.tasks_done)
        tasks.add_metric([member, "failed"], p.tasks_failed)
        for outcome in ("asked", "approved", "rejected", "expired"):
            asked.add_metric([member, outcome], getattr(p, f"approvals_{outcome}"))
        if p.median_seconds_to_decision is not None:
            wait.add_metric([member], p.median_seconds_to_decision)
        daily.add_metric([member], p.cost_per_day[max(p.cost_per_day)] if p.cost_per_day else 0.0)
    yield from (tasks, asked, wait, daily)


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
