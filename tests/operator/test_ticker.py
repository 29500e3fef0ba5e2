"""The Ticker: one loop per watched object, fed the latest body, stopped by deletion."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from dynamo_operator.ticker import Ticker

pytestmark = pytest.mark.timeout(20)

INTERVAL = 0.01


def body(uid: str, generation: int = 1, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", **meta}, "g": generation}


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.seen: list[tuple[str, int]] = []
        self.fail = fail

    async def __call__(self, b: Mapping[str, Any]) -> None:
        self.seen.append((b["metadata"]["uid"], b["g"]))
        if self.fail is not None:
            raise self.fail


async def until(predicate: Any, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(INTERVAL)


async def test_a_loop_per_object_reads_the_latest_body() -> None:
    rec = Recorder()
    ticker = Ticker(rec, INTERVAL)
    ticker.seen(None, body("a"))
    ticker.seen("ADDED", body("b"))
    ticker.seen("ADDED", body("b"))  # a repeated event starts no second loop
    assert ticker.watching == {"a", "b"}
    await until(lambda: ("a", 1) in rec.seen and ("b", 1) in rec.seen)
    ticker.seen("MODIFIED", body("a", 2))
    await until(lambda: ("a", 2) in rec.seen)
    assert len(asyncio.all_tasks()) == 3  # the test and one loop per object
    await ticker.close()
    assert ticker.watching == frozenset()


@pytest.mark.parametrize(
    "event", [("DELETED", {}), ("MODIFIED", {"deletionTimestamp": "2026-12-02T00:00:00Z"})]
)
async def test_deletion_stops_the_loop(event: tuple[str, dict[str, Any]]) -> None:
    rec = Recorder()
    ticker = Ticker(rec, INTERVAL)
    ticker.seen(None, body("a"))
    await until(lambda: rec.seen)
    kind, meta = event
    ticker.seen(kind, body("a", 2, **meta))
    assert ticker.watching == frozenset()
    count = len(rec.seen)
    await asyncio.sleep(INTERVAL * 10)
    assert len(rec.seen) == count and ("a", 2) not in rec.seen
    await ticker.close()


async def test_a_failing_tick_keeps_the_loop_and_waits_the_delay_it_asks() -> None:
    class Expected(Exception):
        pass

    rec = Recorder(fail=Expected("API down"))
    delays: list[BaseException] = []

    def delay_of(exc: BaseException) -> float | None:
        delays.append(exc)
        return INTERVAL if isinstance(exc, Expected) else None

    ticker = Ticker(rec, 60.0, delay_of=delay_of)  # the interval alone would wait a minute
    ticker.seen(None, body("a"))
    await until(lambda: len(rec.seen) >= 3)
    assert all(isinstance(exc, Expected) for exc in delays)
    await ticker.close()


async def test_an_unexpected_failure_waits_the_interval() -> None:
    rec = Recorder(fail=RuntimeError("bug"))
    ticker = Ticker(rec, 0.3)
    ticker.seen(None, body("a"))
    await until(lambda: rec.seen)
    await asyncio.sleep(0.1)
    assert len(rec.seen) == 1
    await until(lambda: len(rec.seen) == 2)
    await ticker.close()


def test_bodies_without_a_uid_are_ignored_and_the_interval_is_checked() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Ticker(Recorder(), 0)
    ticker = Ticker(Recorder(), INTERVAL)
    ticker.seen(None, {"metadata": {"name": "x"}})  # no event loop needed: nothing starts
    assert ticker.watching == frozenset()
