"""The janitor with real processes: a node that left (4 -> 3 nodes) drops what it held
(range deletes) and stops promptly on SIGTERM; the others still serve every key."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dynamo_node.store.storage import Family
from dynamo_node.store.storage_rocks import RocksStorage
from tests.harness import Cluster, NodeProc, stack_dump, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

KEYS = 6000
STOP_DEADLINE_S = 10.0


def value(key: str) -> bytes:
    return (key.encode() * 120)[:1024]


def load(c: Cluster, node: NodeProc, keys: list[str]) -> None:
    def put(key: str) -> None:
        status, _, body = c.put(node, key, value(key), query="?w=3")
        assert status == 204, body

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


def test_a_node_that_left_drops_its_data_and_stops_promptly_on_sigterm(procs: Cluster) -> None:
    n0, n1, n2, n3 = procs.form(4)
    keys = [f"key{i}" for i in range(KEYS)]
    load(procs, n0, keys)
    procs.admin(n0, "POST", "leave", {"node": n3.node_id})
    procs.admin(n0, "POST", "commit")
    wait_for(lambda: procs.status(n3)["state"] == "left", 120, what="n3 left")
    # the janitor of the node that left drops every partition (it replicates none)
    wait_for(
        lambda: "this node no longer replicates" in n3.log(),
        30,
        what="n3's janitor dropped its partitions",
    )
    assert n3.proc is not None
    began = time.monotonic()
    os.kill(n3.pid, signal.SIGTERM)
    try:
        code = n3.proc.wait(STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"n3 did not stop within {STOP_DEADLINE_S}s of SIGTERM:\n{stack_dump(n3.pid)}"
        ) from None
    assert code == 0, n3.log()[-3000:]
    assert time.monotonic() - began < STOP_DEADLINE_S
    storage = RocksStorage(str(n3.data_dir))  # nothing of what it gave away is left
    try:
        assert storage.scan(Family.OBJECTS, limit=1) == []
    finally:
        storage.close()
    sample = keys[::20]
    for node in (n0, n1, n2):
        for key in sample:
            status, _, body = procs.get(node, key, "?r=2")
            assert status == 200 and body == value(key), (node.node_id, key, status)
