"""antientropy.trees: the Merkle trees built in the background and kept current, and
saved trees ("Saved trees"): a clean stop saves them, the next start loads them instead
of scanning, and anything that may not match the data (a crash, another shape, Q or
incarnation, a dropped partition) means a rebuild from the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from dynamo_node.cluster.antientropy import trees
from dynamo_node.cluster.antientropy.trees import (
    SAVED_TREES_MARKER,
    SEGMENTS,
    MerkleTrees,
    _record_key,
)
from dynamo_node.core.codec import all_tombstones
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import InvalidRequest
from dynamo_node.core.merkle import MerkleTree, item_digest
from dynamo_node.core.vclock import VClock
from dynamo_node.node import Node
from dynamo_node.store.identity import META_INCARNATION
from dynamo_node.store.storage import Family, partition_keys, storage_key
from dynamo_node.store.storage_rocks import RocksStorage
from tests.harness import Cluster, wait_for
from tests.node.cluster.test_coordinator import Net, make_cluster
from tests.node.test_membership_cluster import load

pytestmark = pytest.mark.timeout(60)

Q = 16
KEYS = 2000


class CountingStorage(RocksStorage):
    """Counts the objects read by range scans (what a tree build costs)."""

    objects_read = 0

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = super().iter_range(family, start, end)
        if family is not Family.OBJECTS:
            return it
        return self._counted(it)

    def _counted(self, it: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        try:
            for item in it:
                self.objects_read += 1
                yield item
        finally:
            it.close()  # type: ignore[attr-defined]


def open_node(path: Path) -> Node:
    # a single node founding its own cluster: its ring is saved (set_state), as in production
    config = NodeConfig(
        data_dir=str(path),
        port=7000,
        node_id="m0",
        partitions=Q,
        n=1,
        r=1,
        w=1,
        anti_entropy_interval_s=0.0,
        gossip_interval_s=3600.0,
        hint_delivery_interval_s=3600.0,
    )
    return Node(config, CountingStorage(str(path)), Net().factory, serve_peers=False)


def storage_of(node: Node) -> CountingStorage:
    assert isinstance(node.storage, CountingStorage)
    return node.storage


async def put(node: Node, key: str, value: bytes = b"v") -> None:
    await node.coordinator.put(storage_key(key), VClock(), value, "text/plain", 1, 1000)


async def delete(node: Node, key: str) -> None:
    skey = storage_key(key)
    obj = await node.coordinator.get(skey, 1, 1000)
    await node.coordinator.put(skey, obj.context(), None, "", 1, 1000)


def rebuilt(node: Node, p: int) -> tuple[MerkleTree, set[bytes]]:
    """p's tree and tombstone candidates as a full scan of the store makes them."""
    start, end = partition_keys(p, Q)
    items, tombstones = [], set()
    for skey, raw in RocksStorage.iter_range(node.storage, Family.OBJECTS, start, end):  # type: ignore[arg-type]
        items.append((skey, item_digest(skey, raw)))
        if all_tombstones(raw):
            tombstones.add(skey)
    tree = MerkleTree.build(
        items,
        segments=trees.SEGMENTS,
        fanout=trees.FANOUT,
        prefix_bits=Q.bit_length() - 1,
    )
    return tree, tombstones


def assert_current(node: Node) -> None:
    ae = node.anti_entropy.merkle
    for p in range(Q):
        tree, tombstones = rebuilt(node, p)
        mine = ae.tree(p)
        assert mine.shape == tree.shape
        assert mine.leaf_state() == tree.leaf_state(), p
        assert mine.root() == tree.root(), p
        assert ae.tombstone_candidates(p) >= tombstones, p


async def loaded_cluster(path: Path) -> Node:
    """A node holding KEYS keys and a few tombstones, every tree built, then more
    writes: some segments stale at the stop."""
    node = open_node(path)
    await node.start()
    for i in range(KEYS):
        await put(node, f"k{i}")
    for i in range(0, 50, 5):
        await delete(node, f"k{i}")
    for p in range(Q):
        node.anti_entropy.tree(p)
    for i in range(KEYS, KEYS + 40):  # stale at the stop: saved as stale
        await put(node, f"k{i}")
    await put(node, "k7", b"other")
    return node


def crash(node: Node) -> None:
    """The process dies: no Node.stop (so no save); the WAL (synced) keeps every write."""
    node.storage.close()


async def test_a_clean_stop_saves_the_trees_and_the_next_start_loads_them(
    tmp_path: Path,
) -> None:
    node = await loaded_cluster(tmp_path)
    await node.stop()
    node = open_node(tmp_path)
    try:
        ae, storage = node.anti_entropy.merkle, storage_of(node)
        assert ae.loaded == set(range(Q))
        assert storage.get(Family.META, SAVED_TREES_MARKER) is None  # gone before any write
        await node.start()
        for p in range(Q):
            ae.tree(p)
            ae.tombstone_candidates(p)
        # only the segments stale at the stop were read again: no partition scan
        assert 0 < storage.objects_read < KEYS // 10, storage.objects_read
        assert_current(node)
        assert sum(len(ae.tombstone_candidates(p)) for p in range(Q)) == 10
    finally:
        await node.stop()


async def test_after_a_crash_the_trees_are_built_from_the_store(tmp_path: Path) -> None:
    node = await loaded_cluster(tmp_path)
    await node.stop()  # saved
    node = open_node(tmp_path)
    await node.start()
    assert node.anti_entropy.loaded == set(range(Q))
    for i in range(100):  # writes the saved trees do not have, then a crash
        await put(node, f"late{i}")
    await delete(node, "k3")
    await node.commit_log.barrier()
    crash(node)
    node = open_node(tmp_path)
    try:
        storage = storage_of(node)
        assert node.anti_entropy.loaded == set()
        await node.start()
        for p in range(Q):
            node.anti_entropy.tree(p)
        assert storage.objects_read == KEYS + 140  # one full scan, as without saved trees
        assert_current(node)
    finally:
        await node.stop()


async def test_writes_after_a_load_mark_their_segments_stale(tmp_path: Path) -> None:
    node = await loaded_cluster(tmp_path)
    await node.stop()
    node = open_node(tmp_path)
    try:
        await node.start()
        ae = node.anti_entropy.merkle
        for p in range(Q):
            ae.tree(p)
        assert not ae._stale
        await put(node, "k11", b"changed")  # an update, a new key and a delete
        await put(node, "brand-new")
        await delete(node, "k12")
        for key in ("k11", "brand-new", "k12"):
            skey = storage_key(key)
            p = ae._partition_of_skey(skey)
            assert ae.trees[p].segment_of(skey) in ae._stale[p]
        assert_current(node)
    finally:
        await node.stop()
    node = open_node(tmp_path)  # and saved again at this stop, stale segments included
    try:
        assert node.anti_entropy.loaded == set(range(Q))
        assert_current(node)
    finally:
        await node.stop()


async def test_a_dropped_partition_loses_its_saved_tree(tmp_path: Path) -> None:
    node = await loaded_cluster(tmp_path)
    await node.stop()
    node = open_node(tmp_path)
    await node.start()
    storage = storage_of(node)
    assert storage.get(Family.META, _record_key(5)) is not None
    # what the janitor does to a partition this node no longer replicates
    start, end = partition_keys(5, Q)
    storage.delete_range(Family.OBJECTS, start, end)
    node.anti_entropy.discard(5)
    assert storage.get(Family.META, _record_key(5)) is None
    await node.stop()
    node = open_node(tmp_path)
    try:
        assert node.anti_entropy.loaded == set(range(Q)) - {5}
        assert node.storage.get(Family.META, _record_key(5)) is None
        assert len(node.anti_entropy.tree(5)) == 0
        assert_current(node)
    finally:
        await node.stop()


def _edit_marker(storage: RocksStorage, **changes: object) -> None:
    raw = storage.get(Family.META, SAVED_TREES_MARKER)
    assert raw is not None
    marker = {**msgpack.unpackb(raw), **changes}
    storage.write([(Family.META, SAVED_TREES_MARKER, msgpack.packb(marker))])


@pytest.mark.parametrize("change", ["segments", "partitions", "node", "incarnation", "token"])
async def test_saved_trees_of_another_shape_or_node_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    node = await loaded_cluster(tmp_path)
    await node.stop()
    storage = RocksStorage(str(tmp_path))
    if change == "segments":  # the code's tree shape changed
        monkeypatch.setattr(trees, "SEGMENTS", 2 * trees.SEGMENTS)
    elif change == "partitions":  # saved under another Q
        _edit_marker(storage, partitions=2 * Q)
    elif change == "node":  # another node's directory
        _edit_marker(storage, node="m9")
    elif change == "incarnation":
        storage.write([(Family.META, META_INCARNATION, b"deadbeef")])
    else:  # the records of an earlier save
        _edit_marker(storage, token="0" * 32)
    storage.close()
    node = open_node(tmp_path)
    try:
        assert node.anti_entropy.loaded == set()
        assert node.storage.get(Family.META, SAVED_TREES_MARKER) is None
        await node.start()
        assert_current(node)
        assert storage_of(node).objects_read >= KEYS
    finally:
        await node.stop()


async def test_no_save_after_a_failed_write(tmp_path: Path) -> None:
    node = await loaded_cluster(tmp_path)
    ae: MerkleTrees = node.anti_entropy.merkle
    for hook in node.storage.flush_hooks:
        if getattr(hook, "__self__", None) is ae:
            hook(OSError("disk full"))  # what a failed grouped apply reports
    await node.stop()
    node = open_node(tmp_path)
    try:
        assert node.anti_entropy.loaded == set()
    finally:
        await node.stop()


# --- built in the background, kept current ---------------------------------------------
async def test_trees_are_built_in_the_background_and_kept_current() -> None:
    """With periodic rounds on, a node builds every partition's tree as soon as it has a
    ring, so no exchange waits for a build; a write then marks its segment stale, and a
    read of the tree rehashes the stale segments: the tree read equals a fresh build."""
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=3600.0)
    try:
        ae = node.anti_entropy.merkle
        deadline = asyncio.get_running_loop().time() + 10
        while len(ae.trees) < 16:
            assert asyncio.get_running_loop().time() < deadline, "trees never built"
            await asyncio.sleep(0.01)
        assert set(ae.tombstones) == set(range(16))
        for i in range(200):
            await node.coordinator.put(storage_key(f"k{i}"), VClock(), b"v", "", 1, 1000)
        gone = storage_key("k7")
        await node.coordinator.put(gone, node.local.read(gone).context(), None, "", 1, 1000)
        assert ae._stale  # writes only marked their segments
        for p in list(ae.trees):
            tree = ae.tree(p)  # rehashes the stale segments
            root, size = tree.root(), len(tree)
            del ae.trees[p], ae.tombstones[p]
            rebuilt = ae.tree(p)  # a fresh scan
            assert rebuilt.root() == root and len(rebuilt) == size
        assert not ae._stale
        assert sum(len(ae.tree(p)) for p in ae.trees) == 200
        assert any(gone in known for known in ae.tombstones.values())
    finally:
        await node.stop()


async def test_segment_items_read_only_the_ranges_of_their_segments() -> None:
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=0.0)
    try:
        for i in range(500):
            await node.coordinator.put(storage_key(f"k{i}"), VClock(), b"v", "", 1, 1000)
        ae = node.anti_entropy.merkle
        tree = ae.tree(3)
        every = ae.segment_items(3, set(range(SEGMENTS)))
        assert len(every) == len(tree) > 0
        wanted = {tree.segment_of(k) for k in list(every)[:5]} | {
            tree.segment_of(k) + 1 for k in list(every)[5:7]
        }
        wanted &= set(range(SEGMENTS))
        some = ae.segment_items(3, wanted)
        assert some == {k: d for k, d in every.items() if tree.segment_of(k) in wanted}
        with pytest.raises(InvalidRequest):
            ae.segment_items(3, {SEGMENTS})
    finally:
        await node.stop()


# --- real processes ----------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_a_cleanly_restarted_replica_loads_its_trees_and_is_repaired(procs: Cluster) -> None:
    nodes = procs.form(3, "--no-hinted-handoff", "--anti-entropy-interval", "0")
    n0, n1, n2 = nodes
    base = [f"base{i}" for i in range(3000)]
    load(procs, n0, base)
    assert procs.anti_entropy(n0)["keys_repaired"] == 0  # every replica's trees are built
    assert procs.stop(n2) == 0  # SIGTERM: a clean stop saves them
    assert "saved the Merkle trees of 256 partition(s)" in n2.log()

    def n2_down() -> bool:
        return all(
            next(m["state"] for m in procs.status(n)["members"] if m["node"] == "n2") == "down"
            for n in (n0, n1)
        )

    wait_for(n2_down, 15)
    missed = [f"missed{i}" for i in range(300)]  # written while n2 was down
    for key in missed:
        assert procs.put(n0, key, key.encode(), query="?w=2")[0] == 204
    procs.start(n2)
    assert "loaded the saved Merkle trees of 256 partition(s)" in n2.log()
    procs.wait_converged(nodes)
    job = procs.anti_entropy(n0)
    assert job["state"] == "done", job
    assert job["keys_repaired"] == len(missed), job
    again = procs.anti_entropy(n2)
    assert again["state"] == "done" and again["keys_repaired"] == 0, again
    procs.pause(n0)
    procs.pause(n1)
    try:
        lacking = [
            k
            for k in missed + base[::10]
            if procs.get(n2, k, "?r=1&timeout_ms=2000")[:3:2] != (200, k.encode())
        ]
    finally:
        procs.resume(n0)
        procs.resume(n1)
    assert not lacking, lacking[:5]
