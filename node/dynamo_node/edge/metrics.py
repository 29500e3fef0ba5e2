"""Prometheus metrics of a node (one registry per node, so tests can run several).

Per-request metrics (count and latency histogram by route template, method, status) are
aggregated in plain Python on the hot path (one dict lookup, one bisect: about a
microsecond, where prometheus-client's locked children cost several) and exposed
through a custom collector at scrape time. Gauges (hints pending, storage size, ring
version, members up, transfers) and counters of the subsystems are read at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Series:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf


class _Requests(Collector):
    def __init__(self, series: dict[tuple[str, str, int], _Series]) -> None:
        self._series = series

    def collect(self) -> Iterator[Any]:
        labels = ["route", "method", "status"]
        count = CounterMetricFamily("dynamo_http_requests", "HTTP requests", labels=labels)
        hist = HistogramMetricFamily(
            "dynamo_http_request_seconds", "HTTP request latency", labels=labels
        )
        for (route, method, status), s in sorted(self._series.items()):
            values = [route, method, str(status)]
            count.add_metric(values, s.count)
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), s.buckets, strict=True):
                cumulative += n
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            hist.add_metric(values, buckets, s.total)
        yield count
        yield hist


class _Live(Collector):
    def __init__(
        self, gauges: Callable[[], dict[str, float]], counters: Callable[[], dict[str, float]]
    ) -> None:
        self._gauges = gauges
        self._counters = counters

    def collect(self) -> Iterator[Any]:
        for name, value in self._gauges().items():
            g = GaugeMetricFamily(f"dynamo_{name}", name.replace("_", " "))
            g.add_metric([], value)
            yield g
        for name, value in self._counters().items():
            c = CounterMetricFamily(f"dynamo_{name}", name.replace("_", " "))
            c.add_metric([], value)
            yield c


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._series: dict[tuple[str, str, int], _Series] = {}
        self.registry.register(_Requests(self._series))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        s.count += 1
        s.total += seconds
        s.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def add_live(
        self, gauges: Callable[[], dict[str, float]], counters: Callable[[], dict[str, float]]
    ) -> None:
        self.registry.register(_Live(gauges, counters))

    def render(self) -> bytes:
        return generate_latest(self.registry)
