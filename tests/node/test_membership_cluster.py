"""Membership with real processes: join and leave under load with staged commands,
failure detection, and convergence through anti-entropy alone."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import Cluster, NodeProc, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def load(c: Cluster, node: NodeProc, keys: list[str], threads: int = 8) -> None:
    def put(key: str) -> None:
        status, _, body = c.put(node, key, key.encode(), query="?w=3")
        assert status == 204, body

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, keys))


def readable(c: Cluster, node: NodeProc, keys: list[str], r: str = "3") -> list[str]:
    def bad(key: str) -> bool:
        status, _, body = c.get(node, key, f"?r={r}")
        return not (status == 200 and body == key.encode())

    with ThreadPoolExecutor(8) as pool:
        return [k for k, b in zip(keys, pool.map(bad, keys), strict=True) if b]


def ownership(c: Cluster, node: NodeProc) -> dict[str, int]:
    return {m["node"]: m["partitions"] for m in c.status(node)["members"] if m["partitions"]}


class Writer:
    """Keeps writing new keys (W=2) while a change happens; records what was acked."""

    def __init__(self, c: Cluster, node: NodeProc, prefix: str) -> None:
        self.c, self.node, self.prefix = c, node, prefix
        self.acked: list[str] = []
        self.errors: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{i}"
            status = self.c.put(self.node, key, key.encode())[0]
            if status == 204:
                self.acked.append(key)
            else:
                self.errors.append(status)
            i += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_join_a_fourth_node_under_load(procs: Cluster) -> None:
    n0, n1, n2 = procs.form(3)
    keys = [f"key{i}" for i in range(10_000)]
    load(procs, n0, keys)
    n3 = procs.add_node(seed=n0)
    wait_for(lambda: any(m["node"] == n3.node_id for m in procs.status(n0)["members"]), 20)
    procs.admin(n0, "POST", "join", {"address": n3.address})
    plan = procs.admin(n0, "GET", "plan")["plan"]
    assert plan["joins"] == [n3.node_id] and plan["transfers"]
    with Writer(procs, n1, "during-join-") as writer:
        procs.admin(n0, "POST", "commit")
        sample = keys[::50]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            statuses = [procs.status(n) for n in (n0, n1, n2, n3)]
            busy = any(s["transfers"] for s in statuses)
            assert not readable(procs, n2, sample), "a key became unreadable during the join"
            if not busy and len({s["ring_version"] for s in statuses}) == 1:
                break
    procs.wait_converged([n0, n1, n2, n3])
    counts = ownership(procs, n0)
    assert set(counts) == {"n0", "n1", "n2", "n3"}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert not readable(procs, n3, keys)
    assert not writer.errors, writer.errors[:5]
    assert not readable(procs, n0, writer.acked)


def test_leave_moves_partitions_then_node_stops(procs: Cluster) -> None:
    nodes = procs.form(4)
    n0, n3 = nodes[0], nodes[3]
    keys = [f"key{i}" for i in range(3000)]
    load(procs, n0, keys)
    procs.admin(n0, "POST", "leave", {"node": n3.node_id})
    with Writer(procs, n0, "during-leave-") as writer:
        procs.admin(n0, "POST", "commit")
        wait_for(lambda: procs.status(n3)["state"] == "left", 120, what="n3 left")
    procs.wait_converged(nodes[:3])
    assert procs.status(n0)["members"]
    assert ownership(procs, n0).keys() == {"n0", "n1", "n2"}
    assert procs.stop(n3) == 0  # it stops cleanly
    assert not readable(procs, n0, keys)
    assert not readable(procs, nodes[1], writer.acked)


def test_killed_and_paused_nodes_seen_down_within_5s(procs: Cluster) -> None:
    nodes = procs.form(4)
    victim = nodes[3]

    def seen(state: str) -> bool:
        return all(
            next(m["state"] for m in procs.status(n)["members"] if m["node"] == victim.node_id)
            == state
            for n in nodes[:3]
        )

    start = time.monotonic()
    procs.kill(victim)
    wait_for(lambda: seen("down"), 5.0, interval=0.05, what="kill detected")
    assert time.monotonic() - start < 5.0
    version = procs.status(nodes[0])["ring_version"]
    procs.start(victim)
    wait_for(lambda: seen("up"), 10, what="back up")
    start = time.monotonic()
    procs.pause(victim)
    try:
        wait_for(lambda: seen("down"), 5.0, interval=0.05, what="pause detected")
        assert time.monotonic() - start < 5.0
    finally:
        procs.resume(victim)
    wait_for(lambda: seen("up"), 10, what="back up after pause")
    assert procs.status(nodes[0])["ring_version"] == version  # down is not departure


def _ae_pass(c: Cluster, node: NodeProc) -> dict[str, object]:
    return c.anti_entropy(node)


def _diverge(c: Cluster, nodes: list[NodeProc], count: int, prefix: str) -> list[str]:
    """Write `count` keys that the paused third replica never sees."""
    n0, n1, n2 = nodes
    c.pause(n2)
    try:
        # until n2 is detected down, writes may still queue on its socket: wait first, on
        # both live nodes (n0 could still learn a last heartbeat of n2 from n1's gossip and
        # count it up again for a moment)
        def down_everywhere() -> bool:
            return all(
                next(m["state"] for m in c.status(n)["members"] if m["node"] == "n2") == "down"
                for n in (n0, n1)
            )

        wait_for(down_everywhere, 15)
        keys = [f"{prefix}{i}" for i in range(count)]
        for k in keys:
            assert c.put(n0, k, b"fresh", query="?w=2")[0] == 204
    finally:
        c.resume(n2)
    c.wait_converged(nodes)
    return keys


def _held_by(c: Cluster, nodes: list[NodeProc], keys: list[str]) -> int:
    """How many of `keys` the third replica holds on its own (the others paused)."""
    n0, n1, n2 = nodes
    c.pause(n0)
    c.pause(n1)
    try:
        had = sum(1 for k in keys if c.get(n2, k, "?r=1&timeout_ms=300")[0] == 200)

        # the reads' calls to n0 and n1 must time out before those resume: a late reply
        # would read-repair n2 (and leave anti-entropy nothing to do)
        def others_down() -> bool:
            states = {m["node"]: m["state"] for m in c.status(n2)["members"]}
            return states["n0"] == states["n1"] == "down"

        wait_for(others_down, 15)
    finally:
        c.resume(n0)
        c.resume(n1)
    c.wait_converged(nodes)
    if had:
        print(f"n2 held {had} of {len(keys)} keys written while it was paused")
    return had


@pytest.mark.parametrize(
    "total",
    [pytest.param(5_000, id="5k"), pytest.param(50_000, id="50k", marks=pytest.mark.slow)],
)
def test_paused_replica_converges_by_anti_entropy_alone(procs: Cluster, total: int) -> None:
    nodes = procs.form(3, "--no-hinted-handoff", "--anti-entropy-interval", "0")
    n0, n1, n2 = nodes
    load(procs, n0, [f"base{i}" for i in range(total)])
    assert _ae_pass(procs, n0)["keys_repaired"] == 0
    baseline = int(_ae_pass(procs, n0)["bytes_exchanged"])  # type: ignore[call-overload]
    small = _diverge(procs, nodes, 10, "small")
    job_small = _ae_pass(procs, n0)
    large = _diverge(procs, nodes, 1000, "large")
    had = _held_by(procs, nodes, large)
    job_large = _ae_pass(procs, n0)
    assert job_small["keys_repaired"] == 10, job_small
    # one pass repairs exactly what n2 lacks. That is all 1000 keys, unless some reached
    # n2 before the pass: seen once in CI (283 repaired), not reproduced since; `had`
    # tells which case a run was
    assert job_large["keys_repaired"] == 1000 - had, (job_large, had)
    assert had < 1000
    bytes_small = int(job_small["bytes_exchanged"]) - baseline  # type: ignore[call-overload]
    bytes_large = int(job_large["bytes_exchanged"]) - baseline  # type: ignore[call-overload]
    # traffic follows the differences, not the data size
    assert bytes_large > 10 * bytes_small, (bytes_small, bytes_large)
    full_size = total * 150
    assert bytes_small < full_size / 20, (bytes_small, full_size)
    procs.pause(n0)
    procs.pause(n1)
    try:
        missing = [k for k in small + large if procs.get(n2, k, "?r=1&timeout_ms=2000")[0] != 200]
    finally:
        procs.resume(n0)
        procs.resume(n1)
    assert not missing, len(missing)
    report = {"total": total, "baseline": baseline, "d10": bytes_small, "d1000": bytes_large}
    print(json.dumps(report))


def test_transfer_resumes_after_either_side_crashes(procs: Cluster) -> None:
    slow = ("--transfer-batch", "50", "--transfer-pause", "0.02")
    n0, n1, n2 = procs.form(3, *slow)
    keys = [f"key{i}" for i in range(3000)]
    load(procs, n0, keys)
    n3 = procs.add_node(*slow, seed=n0)
    wait_for(lambda: any(m["node"] == "n3" for m in procs.status(n0)["members"]), 20)
    procs.admin(n0, "POST", "join", {"address": n3.address})
    procs.admin(n0, "POST", "commit")

    def halfway(node: NodeProc) -> bool:
        st = procs.status(node)
        done = st["transfers_total"] - len(st["transfers"])
        return 0 < done < st["transfers_total"] - 20

    wait_for(lambda: halfway(n1), 60, interval=0.02, what="transfers under way")
    procs.kill(n1)  # a sender dies mid-stream...
    procs.start(n1)
    wait_for(lambda: halfway(n0), 60, interval=0.02, what="transfers under way again")
    procs.kill(n3)  # ...and so does the receiver
    procs.start(n3)
    procs.wait_converged([n0, n1, n2, n3], timeout=180)
    assert not readable(procs, n3, keys)
    assert not readable(procs, n0, keys)


def test_tombstones_are_purged_once_every_replica_has_them(procs: Cluster) -> None:
    nodes = procs.form(3, "--tombstone-grace", "0", "--anti-entropy-interval", "0")
    n0 = nodes[0]
    keys = [f"gone{i}" for i in range(50)]
    load(procs, n0, keys)
    for key in keys:
        ctx = procs.get(n0, key)[1]["X-Dynamo-Context"]
        assert procs.delete(n0, key, context=ctx, query="?w=3")[0] == 204
    procs.pause(nodes[2])
    try:  # a replica is unreachable: nothing may be purged
        wait_for(
            lambda: (
                next(m["state"] for m in procs.status(n0)["members"] if m["node"] == "n2") == "down"
            ),
            10,
        )
        assert _ae_pass(procs, n0)["tombstones_purged"] == 0
    finally:
        procs.resume(nodes[2])
    procs.wait_converged(nodes)
    assert _ae_pass(procs, n0)["tombstones_purged"] == 50
    for node in nodes:  # gone everywhere: no context left behind, a plain 404
        status, headers, _ = procs.get(node, keys[0], "?r=1")
        assert status == 404 and "X-Dynamo-Context" not in headers


def test_a_member_that_never_joined_can_be_forgotten(procs: Cluster) -> None:
    n0 = procs.add_node()
    stray = procs.add_node(seed=n0)
    wait_for(lambda: any(m["node"] == stray.node_id for m in procs.status(n0)["members"]), 20)
    procs.kill(stray)
    answer = procs.admin(n0, "POST", "leave", {"node": stray.node_id})
    assert answer == {"forgotten": True, "node": stray.node_id}
    states = {m["node"]: m["state"] for m in procs.status(n0)["members"]}
    assert states[stray.node_id] == "left"
    assert ownership(procs, n0) == {"n0": 256}
