"""A damaged write-ahead log is detected, never skipped (storage_rocks.py, main.py):
thousands of writes, kill -9, 4 KiB overwritten in the middle of the WAL, restart: the
node refuses to start, naming the damage and the way out, instead of serving without
the writes after the damage."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from dynamo_node.main import EXIT_CORRUPT
from tests.harness import Cluster, wait_for

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


def _damage_wal(data_dir: Path) -> Path:
    wals = sorted(data_dir.glob("*.log"), key=lambda p: p.stat().st_size)
    assert wals and wals[-1].stat().st_size > 64 * 1024, [p.stat().st_size for p in wals]
    wal = wals[-1]
    with open(wal, "r+b") as f:
        f.seek(wal.stat().st_size // 2)
        f.write(os.urandom(4096))
    return wal


def test_on_corruption_replace_moves_the_directory_aside_and_refills(procs: Cluster) -> None:
    nodes = procs.form(3, "--durability", "sync", "--anti-entropy-interval", "0")
    n0, n1, n2 = nodes
    keys = [f"key-{i:05d}" for i in range(1200)]
    for i, key in enumerate(keys):
        assert procs.put(nodes[i % 3], key, key.encode() * 20, query="?w=all")[0] == 204
    procs.kill(n1)
    wal = _damage_wal(n1.data_dir)
    # without the flag: refused, and the message names the way out
    procs.start(n1, wait=False)
    assert n1.proc is not None and n1.proc.wait(30) == EXIT_CORRUPT
    assert "--on-corruption=replace" in n1.log()
    # and without --node-id: the id is read from the damaged directory (read-only)
    at = n1.args.index("--node-id")
    del n1.args[at : at + 2]
    n1.args += ["--on-corruption", "replace"]
    procs.start(n1)
    (aside,) = n1.data_dir.parent.glob(f"{n1.data_dir.name}.corrupt-*")
    assert (aside / wal.name).exists(), sorted(p.name for p in aside.iterdir())
    assert "moved it aside" in n1.log()

    def replacing() -> bool:
        members = {m["node"]: m["state"] for m in procs.status(n0)["members"]}
        return members.get(n1.node_id) == "replacing" or procs.status(n1)["refill"] is not None

    # the flag shows at once or the refill is already over: either way it was one
    with contextlib.suppress(TimeoutError):
        wait_for(replacing, 10, interval=0.05, what="n1 to be a replacement")
    assert "it is a replacement" in n1.log(), n1.log()[-3000:]
    wait_for(lambda: procs.status(n1)["refill"] is None, 120, interval=0.2, what="n1 refilled")
    assert procs.status(n1)["node"] == n1.node_id
    metrics = procs.request(n1, "GET", "/metrics")[2].decode()
    assert "dynamo_storage_corruption_total 1.0" in metrics
    procs.wait_converged(nodes)
    # every acknowledged key, from n1 alone: n0 and n2 stopped
    procs.stop(n0)
    procs.stop(n2)
    for key in keys:
        code, _, body = procs.get(n1, key, "?r=1")
        assert (code, body) == (200, key.encode() * 20), (key, code)
    assert aside.exists()


def test_a_damaged_table_block_fails_the_node_never_answers_not_found(procs: Cluster) -> None:
    from dynamo_node.store.storage_rocks import RocksStorage

    nodes = procs.form(3, "--anti-entropy-interval", "0")
    n0, n1, n2 = nodes
    keys = [f"key-{i:05d}" for i in range(1500)]
    for i, key in enumerate(keys):
        assert procs.put(nodes[i % 3], key, key.encode() * 200, query="?w=all")[0] == 204
    procs.stop(n1)
    flushed = RocksStorage(str(n1.data_dir))  # RocksDB writes the memtable as tables
    flushed._db.flush()
    flushed.close()
    (table,) = [p for p in n1.data_dir.glob("*.sst") if p.stat().st_size > 1 << 20]
    with open(table, "r+b") as f:
        f.seek(table.stat().st_size // 4)  # a data block (index and filter are at the end)
        f.write(os.urandom(512))
    procs.start(n1)  # the open does not read data blocks
    failed = 0
    for key in keys:
        code, _, body = procs.get(n1, key)
        if code == 200:
            assert body == key.encode() * 200, key  # never other bytes
        else:
            assert code == 503 and b"storage_corrupt" in body, (key, code, body[:300])
            failed += 1
    assert failed <= 1, failed  # the first read that hit the damage; then the peers serve
    assert procs.request(n1, "GET", "/readyz")[0] == 503
    metrics = procs.request(n1, "GET", "/metrics")[2].decode()
    assert "dynamo_storage_corruption_total 1.0" in metrics
    assert "dynamo_storage_failed 1.0" in metrics
    assert table.name in n1.log() and "damaged data" in n1.log()
    # and the next start refuses the directory, naming the file
    procs.stop(n1)
    procs.start(n1, wait=False)
    assert n1.proc is not None and n1.proc.wait(30) == EXIT_CORRUPT
    assert "Corruption recorded" in n1.log() and table.name in n1.log().split("refusing")[-1]
    procs.stop(n0)
    procs.stop(n2)
