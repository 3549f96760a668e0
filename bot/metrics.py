"""`/metrics`: the web process's own counters plus the capacity of the whole system, read from
Redis at scrape time (queue depth and age, busy/idle workers, turn latency)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from jobs import capacity


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
