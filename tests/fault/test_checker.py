"""The checker must catch what it claims to catch (a checker that finds nothing proves
nothing): `judge` on hand-made histories, and end to end, last-write-wins mode losing
cart items under concurrent clients (Jepsen's finding on Riak with LWW), which the
default sibling mode must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fault import scenarios
from tests.fault.checker import Verdict, judge
from tests.fault.scenarios import Scenario
from tests.fault.workloads import FAIL, OK, UNDOCUMENTED, UNKNOWN, History, Op


def op(kind: str, key: str, value: str, outcome: str, siblings: int = 0) -> Op:
    return Op(0, kind, key, value, "n0", outcome, 204 if outcome == OK else 503, 0.0, 0.1, siblings)


def cart(*items: str) -> bytes:
    return json.dumps(sorted(items)).encode()


def test_an_acknowledged_write_missing_from_the_final_state_is_lost() -> None:
    h = History()
    h.add(op("write", "a", "1", OK))
    h.add(op("write", "b", "2", OK))
    h.add(op("write", "c", "3", UNKNOWN))
    h.add(op("write", "d", "4", FAIL))
    v = Verdict()
    judge(h, {"a": (b"1",), "b": (), "c": (), "d": (b"4",)}, v)
    assert (v.writes_acked, v.lost, v.writes_unknown, v.writes_failed) == (2, 1, 1, 1)
    assert v.unacked_present == 1
    assert "b=2" in v.lost_examples[0]


def test_an_acknowledged_write_among_siblings_is_present() -> None:
    h = History()
    h.add(op("write", "a", "1", OK))
    v = Verdict()
    judge(h, {"a": (b"0", b"1")}, v)
    assert v.lost == 0


def test_cart_items_count_when_in_any_sibling_and_are_lost_otherwise() -> None:
    h = History()
    for item in ("x", "y", "z"):
        h.add(op("cart-write", "f/cart/0", item, OK))
    h.add(op("cart-read", "f/cart/0", "", OK, siblings=2))
    h.add(op("cart-read", "f/cart/0", "", UNDOCUMENTED))
    v = Verdict()
    judge(h, {"f/cart/0": (cart("x"), cart("y"))}, v)
    assert v.items_acked == 3 and v.lost == 1 and "=z" in v.lost_examples[0]
    assert v.siblings_seen == 1 and v.max_siblings == 2
    assert v.undocumented == 1
    assert v.final_carts["f/cart/0"] == {"items": 2, "siblings": 2}
    assert not v.ok


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_the_checker_catches_last_write_wins_losing_cart_items(tmp_path: Path) -> None:
    lww = Scenario("lww", 3, (), 6.0, cart_workers=4, carts=1, think_s=0.0, node_flags=("--lww",))
    result = scenarios.run(lww, tmp_path, seed=1)
    print(result.summary())
    v = result.verdict
    assert v.items_acked > 0
    assert v.lost > 0, "concurrent read-modify-writes under LWW must lose cart items"
    assert v.writes_acked > 0 and all("cart-write" in e for e in v.lost_examples)
    assert not result.ok
