"""A damaged write-ahead log is detected, never skipped (storage_rocks.py, main.py):
thousands of writes, kill -9, 4 KiB overwritten in the middle of the WAL, restart: the
node refuses to start, naming the damage and the way out, instead of serving without
the writes after the damage."""

from __future__ import annotations

import os

import pytest

from dynamo_node.main import EXIT_CORRUPT
from tests.harness import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_a_wal_damaged_in_the_middle_stops_the_node(procs: Cluster) -> None:
    node = procs.add_node("--durability", "sync")
    for i in range(1500):
        code = procs.put(node, f"key-{i:05d}", b"v" * 200, query="?w=1")[0]
        assert code == 204
    procs.kill(node)
    wals = sorted(node.data_dir.glob("*.log"), key=lambda p: p.stat().st_size)
    assert wals and wals[-1].stat().st_size > 64 * 1024, [p.stat().st_size for p in wals]
    wal = wals[-1]
    with open(wal, "r+b") as f:
        f.seek(wal.stat().st_size // 2)
        f.write(os.urandom(4096))
    procs.start(node, wait=False)
    assert node.proc is not None
    assert node.proc.wait(30) == EXIT_CORRUPT
    log = node.log()
    assert "refusing to start" in log and "Corruption" in log, log[-2000:]
    assert wal.name in log or str(node.data_dir) in log
