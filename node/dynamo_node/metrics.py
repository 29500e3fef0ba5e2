"""Prometheus metrics of a node (one registry per node, so tests can run several).

Request metrics are labelled by route template, method and status; gauges (hints
pending, storage size, ring version, members up, transfers) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Live(Collector):
    def __init__(
        self, read: Callable[[], dict[str, float]], counters: Callable[[], dict[str, float]]
    ) -> None:
        self._read = read
        self._counters = counters

    def collect(self) -> Iterator[Any]:
        for name, value in self._read().items():
            g = GaugeMetricFamily(f"dynamo_{name}", name.replace("_", " "))
            g.add_metric([], value)
            yield g
        for name, value in self._counters().items():
            c = CounterMetricFamily(f"dynamo_{name}", name.replace("_", " "))
            c.add_metric([], value)
            yield c


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dynamo_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dynamo_http_request_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        pair = self._children.get(key)
        if pair is None:
            labels = (route, method, str(status))
            pair = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def add_live(
        self, gauges: Callable[[], dict[str, float]], counters: Callable[[], dict[str, float]]
    ) -> None:
        self.registry.register(_Live(gauges, counters))

    def render(self) -> bytes:
        return generate_latest(self.registry)
