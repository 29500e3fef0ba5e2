"""Sloppy quorum through a non-replica fallback, with real processes (5 nodes, N=3): with
one replica of a key down, a write at W=N is taken by a node outside the key's
preference list, which keeps a hint and hands the write to the replica when it is back
(coordinator.py, hints.py, node.py)."""

from __future__ import annotations

import pytest

from dynamo_node.core.ring import partition_of
from dynamo_node.store.storage import skey_hash, storage_key
from tests.harness import Cluster, NodeProc, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def preference_list(c: Cluster, node: NodeProc, key: str) -> list[str]:
    ring = c.admin(node, "GET", "ring")
    p = partition_of(skey_hash(storage_key(key)), len(ring["partitions"]))
    return list(ring["partitions"][p]["preference_list"])


def test_a_write_at_w_n_with_a_replica_down_goes_to_a_non_replica_fallback(
    procs: Cluster,
) -> None:
    nodes = procs.form(5, "--anti-entropy-interval", "0")
    by_id = {n.node_id: n for n in nodes}
    key = "sloppy"
    replicas = preference_list(procs, nodes[0], key)
    assert len(replicas) == 3
    down = by_id[replicas[0]]
    outsiders = [n for n in nodes if n.node_id not in replicas]
    coordinator = outsiders[0]
    procs.kill(down)
    wait_for(
        lambda: (
            {m["node"]: m["state"] for m in procs.status(coordinator)["members"]}[down.node_id]
            == "down"
        ),
        20,
        what="the replica seen down",
    )
    # W = N = 3 with one replica down: only a fallback outside the preference list
    # can make up the third acknowledgement
    code, _, body = procs.put(coordinator, key, b"kept by a fallback", query="?w=3")
    assert code == 204, body
    holders = [n for n in outsiders if procs.status(n)["hints_pending"] > 0]
    assert holders, "no non-replica node keeps a hint for the down replica"
    # the replica comes back: the hint is delivered and dropped
    procs.start(down)
    wait_for(
        lambda: all(procs.status(n)["hints_pending"] == 0 for n in holders),
        30,
        what="the hint delivered",
    )
    # the replica holds the write itself now: with the other two replicas paused, a
    # read at R=1 through it is answered by its own copy
    others = [by_id[r] for r in replicas[1:]]
    for node in others:
        procs.pause(node)
    try:
        code, _, body = procs.get(down, key, "?r=1&timeout_ms=2000")
    finally:
        for node in others:
            procs.resume(node)
    assert (code, body) == (200, b"kept by a fallback")
