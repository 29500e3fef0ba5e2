"""The file-descriptor budget (fdbudget.py): the split is pure; with a real process under
a low limit, idle client connections beyond the budget are refused and storage stays
healthy."""

from __future__ import annotations

import http.client
import socket

import pytest

from dynamo_node.host.fdbudget import MIN_CONNECTIONS, RESERVE, Budget
from tests.harness import Cluster


@pytest.mark.parametrize("limit", [256, 1024, 4096, 1 << 20])
def test_the_split_leaves_storage_its_share(limit: int) -> None:
    b = Budget.of(limit)
    assert b.rocksdb + b.connections + RESERVE <= limit
    assert 32 <= b.rocksdb <= 1024
    assert b.connections >= MIN_CONNECTIONS


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_idle_connections_cannot_starve_storage(procs: Cluster) -> None:
    node = procs.add_node()
    procs.stop(node)
    node.args = ["prlimit", "--nofile=256:256", "--", *node.args]
    procs.start(node)
    keep = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    keep.request("GET", "/readyz")
    ready = keep.getresponse()
    ready.read()
    assert ready.status == 200
    flood = []
    try:
        for _ in range(300):  # more than the process may open at all
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", node.port))
            except OSError:
                s.close()
                continue
            flood.append(s)
        # the node still writes (its WAL, its tables) through the flood
        for i in range(300):
            keep.request("PUT", f"/v1/kv/k{i}?w=1", body=b"v" * 1000)
            response = keep.getresponse()
            response.read()
            assert response.status == 204, response.status
    finally:
        for s in flood:
            s.close()
        keep.close()
    status = procs.status(node)
    assert status["storage_failure"] is None
    metrics = procs.request(node, "GET", "/metrics")[2].decode()
    (line,) = [x for x in metrics.splitlines() if x.startswith("dynamo_http_connections_refused")]
    assert float(line.split()[1]) > 0, line
    assert procs.get(node, "k299", "?r=1")[2] == b"v" * 1000
