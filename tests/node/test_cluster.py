"""A real 3-node cluster on loopback (separate dynamo-node processes, RocksDB dirs):
quorums with failed nodes, hinted handoff, siblings across coordinators, read repair,
deadlines with paused nodes."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness import Cluster, NodeProc, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def values(c: Cluster, node: NodeProc, key: str, query: str = "") -> list[bytes]:
    status, _, body = c.get(node, key, query)
    if status == 200:
        return [body]
    if status == 300:
        import base64

        return sorted(base64.b64decode(s["value_b64"]) for s in json.loads(body)["siblings"])
    assert status == 404, (status, body)
    return []


def test_writes_survive_a_killed_node_and_hints_bring_it_back(procs: Cluster) -> None:
    n0, n1, n2 = procs.form(3)
    procs.kill(n2)
    for i in range(20):
        status, _, body = procs.put(n0, f"k{i}", f"v{i}".encode(), query="?w=2")
        assert status == 204, body
    status, _, body = procs.put(n0, "strict", b"x", query="?w=3&timeout_ms=1000")
    assert status == 503
    err = json.loads(body)["error"]
    assert err["code"] == "quorum_not_met" and err["answered"] == 2 and err["required"] == 3
    hints = sum(procs.status(n)["hints_pending"] for n in (n0, n1))
    assert hints >= 20
    procs.start(n2)
    wait_for(
        lambda: sum(procs.status(n)["hints_pending"] for n in (n0, n1)) == 0,
        30,
        what="hints delivered",
    )
    # n2 alone serves what it missed
    procs.pause(n0)
    procs.pause(n1)
    try:
        for i in range(20):
            assert values(procs, n2, f"k{i}", "?r=1&timeout_ms=2000") == [f"v{i}".encode()]
    finally:
        procs.resume(n0)
        procs.resume(n1)


def test_blind_writes_via_two_coordinators_make_siblings(procs: Cluster) -> None:
    n0, n1, n2 = procs.form(3)
    assert procs.put(n0, "cart", b'["a"]')[0] == 204
    assert procs.put(n1, "cart", b'["b"]')[0] == 204
    status, headers, body = procs.get(n2, "cart", "?r=3")
    assert status == 300, body
    assert sorted(json.loads(body)["siblings"], key=str)  # two siblings
    assert len(json.loads(body)["siblings"]) == 2
    ctx = headers["X-Dynamo-Context"]
    assert procs.put(n2, "cart", b'["a","b"]', context=ctx, query="?w=3")[0] == 204
    for node in (n0, n1, n2):
        assert values(procs, node, "cart", "?r=3") == [b'["a","b"]']


def test_read_repair_fixes_a_stale_replica(procs: Cluster) -> None:
    n0, n1, n2 = procs.form(3, "--no-hinted-handoff")
    procs.kill(n2)
    assert procs.put(n0, "rr", b"fresh", query="?w=2")[0] == 204
    procs.start(n2)
    procs.wait_converged([n0, n1, n2])
    assert values(procs, n0, "rr", "?r=3") == [b"fresh"]  # reads all three; repairs n2

    def n2_alone_has_it() -> bool:
        procs.pause(n0)
        procs.pause(n1)
        try:
            return values(procs, n2, "rr", "?r=1&timeout_ms=1000") == [b"fresh"]
        finally:
            procs.resume(n0)
            procs.resume(n1)

    wait_for(n2_alone_has_it, 20, interval=0.5, what="read repair reaching n2")


def test_two_paused_nodes_make_w2_fail_within_deadline(procs: Cluster) -> None:
    n0, n1, n2 = procs.form(3)
    procs.pause(n1)
    procs.pause(n2)
    try:
        start = time.monotonic()
        status, _, body = procs.put(n0, "p", b"x", query="?w=2&timeout_ms=800")
        elapsed = time.monotonic() - start
        assert status == 503, body
        assert elapsed < 3.0, elapsed
        status, _, _ = procs.get(n0, "p", "?r=2&timeout_ms=800")
        assert status == 503
    finally:
        procs.resume(n1)
        procs.resume(n2)
    # and the cluster recovers
    wait_for(lambda: procs.put(n0, "p2", b"y", query="?w=3")[0] == 204, 20, what="recovery")
