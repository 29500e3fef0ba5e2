"""The janitor (janitor.Janitor.drop_foreign_partitions): a node drops the partitions it
no longer replicates with one range delete each, never scans them again, yields to the
loop between partitions, and drops nothing while a plan is in progress."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamo_node.core.config import NodeConfig
from dynamo_node.core.membership import ClusterState, Member, commit, plan
from dynamo_node.core.ring import key_hash, partition_of
from dynamo_node.core.vclock import VClock
from dynamo_node.net.transport import Handler, MemoryTransport
from dynamo_node.node import Node
from dynamo_node.store.storage import Family, MemoryStorage, Storage, partition_keys, storage_key
from dynamo_node.store.storage_rocks import RocksStorage

pytestmark = pytest.mark.timeout(60)

Q = 16
NODES = ["m0", "m1", "m2", "m3"]


class Counting:
    """A storage that counts the calls made to it (and may run a hook on delete_range)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.scans: list[tuple[bytes, bytes | None]] = []
        self.calls = 0
        self.range_deletes: list[tuple[bytes, bytes | None]] = []
        self.on_delete_range: Any = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attr(*args, **kwargs)

            return counted
        return attr

    def scan(
        self, family: Family, start: bytes = b"", end: bytes | None = None, limit: int = 0
    ) -> list[tuple[bytes, bytes]]:
        self.calls += 1
        if family is Family.OBJECTS:
            self.scans.append((start, end))
        return self.inner.scan(family, start, end, limit)

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self.calls += 1
        if family is Family.OBJECTS:
            self.scans.append((start, end))
        return self.inner.iter_range(family, start, end)

    def delete_range(self, family: Family, start: bytes, end: bytes | None) -> None:
        self.calls += 1
        self.range_deletes.append((start, end))
        self.inner.delete_range(family, start, end)
        if self.on_delete_range is not None:
            self.on_delete_range()


def settled_state(nodes: list[str] = NODES) -> ClusterState:
    """Every node in the ring (N=3 of 4: each node replicates 3/4 of the partitions)."""
    members = [
        Member(n, f"127.0.0.1:{7000 + i}", f"127.0.0.1:{17000 + i}") for i, n in enumerate(nodes)
    ]
    state = ClusterState.founding("test", members[0], Q, 3)
    for member in members[1:]:
        state = state.with_member(member)
    state = commit(state, plan(state, nodes[1:], []), nodes[0])
    for t in state.pending_transfers():
        state = state.with_done(t.partition, t.target)
    state = state.settle()
    assert state.next is None
    return state


def make_node(storage: Any, node_id: str = "m3") -> Node:
    config = NodeConfig(data_dir="", port=7003, node_id=node_id, partitions=Q)
    registry: dict[str, Handler] = {}
    node = Node(config, storage, lambda n: MemoryTransport(n.node_id, registry), serve_peers=False)
    node.view.state = settled_state()
    return node


def keys_by_partition(count: int = 800) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {p: [] for p in range(Q)}
    for i in range(count):
        key = f"key{i}"
        out[partition_of(key_hash(key.encode()), Q)].append(storage_key(key))
    return out


def fill(node: Node, count: int = 800) -> dict[int, list[bytes]]:
    keys = keys_by_partition(count)
    for skeys in keys.values():
        for skey in skeys:
            node.replica.apply_put(skey, VClock(), b"v-" + skey[8:], "text/plain")
    return keys


def held(storage: Storage, p: int) -> int:
    start, end = partition_keys(p, Q)
    return len(storage.scan(Family.OBJECTS, start, end))


def foreign(node: Node) -> list[int]:
    state = node.require_state()
    return [p for p in range(Q) if node.node_id not in state.preference_list(p)]


@pytest.fixture(params=["memory", "rocks"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    s: Storage = (
        MemoryStorage()
        if request.param == "memory"
        else RocksStorage(str(tmp_path / "db"), row_cache_bytes=1 << 20)
    )
    yield s
    s.close()


async def test_drops_exactly_the_partitions_it_no_longer_replicates(backend: Storage) -> None:
    node = make_node(backend)
    keys = fill(node)
    gone = foreign(node)
    assert 0 < len(gone) < Q
    for p in range(Q):
        assert held(backend, p) == len(keys[p])
    assert await node.janitor.drop_foreign_partitions() == len(gone)
    for p in range(Q):
        assert held(backend, p) == (0 if p in gone else len(keys[p])), p
        for skey in keys[p][:5]:  # never served from a cache either
            found = node.replica.read_encoded(skey)
            assert (found is None) if p in gone else (found is not None)
    assert node.janitor.partitions_dropped == len(gone)


async def test_a_dropped_partition_is_never_scanned_again() -> None:
    storage = Counting(MemoryStorage())
    node = make_node(storage)
    fill(node)
    gone = foreign(node)
    await node.janitor.drop_foreign_partitions()
    first_scans, first_deletes = len(storage.scans), len(storage.range_deletes)
    storage.scans.clear()
    storage.range_deletes.clear()
    for _ in range(5):  # later passes: no scan, no delete
        await node.janitor.drop_foreign_partitions()
    assert storage.scans == [] and storage.range_deletes == []
    assert first_deletes == len(gone)
    assert first_scans == len(gone)  # one probe each, before its range delete


async def test_a_write_into_a_dropped_partition_is_dropped_again() -> None:
    storage = Counting(MemoryStorage())
    node = make_node(storage)
    keys = fill(node)
    await node.janitor.drop_foreign_partitions()
    p = foreign(node)[0]
    storage.scans.clear()
    # a coordinator with an older ring still writes here
    node.replica.apply_put(keys[p][0], VClock(), b"stray", "text/plain")
    assert held(storage.inner, p) == 1
    storage.scans.clear()
    assert await node.janitor.drop_foreign_partitions() == 1
    assert held(storage.inner, p) == 0
    assert storage.scans == [partition_keys(p, Q)]  # only that partition looked at


async def test_a_new_ring_probes_each_foreign_partition_once() -> None:
    storage = Counting(MemoryStorage())
    node = make_node(storage)
    fill(node)
    await node.janitor.drop_foreign_partitions()
    state = node.require_state()
    node.view.state = ClusterState(
        state.cluster, state.n, state.ring.with_version(state.version + 1), state.members
    )
    storage.scans.clear()
    storage.range_deletes.clear()
    assert await node.janitor.drop_foreign_partitions() == 0  # all empty already
    assert len(storage.scans) == len(foreign(node)) and storage.range_deletes == []
    storage.scans.clear()
    assert await node.janitor.drop_foreign_partitions() == 0
    assert storage.scans == []


async def test_the_loop_runs_between_partitions() -> None:
    """Each loop step of a pass does O(1) storage calls (one probe, one range delete),
    whatever the number of keys: the old janitor deleted 1000 keys per step."""
    storage = Counting(MemoryStorage())
    node = make_node(storage)
    fill(node, 4000)
    calls_per_step: list[int] = []
    done = False

    async def ticker() -> None:
        last = storage.calls
        while not done:
            await asyncio.sleep(0)
            calls_per_step.append(storage.calls - last)
            last = storage.calls

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        dropped = await node.janitor.drop_foreign_partitions()
    finally:
        done = True
        await tick
    assert max(calls_per_step) <= 3, max(calls_per_step)
    assert len(calls_per_step) >= len(foreign(node)) == dropped


async def test_nothing_is_dropped_while_a_plan_is_in_progress() -> None:
    storage = Counting(MemoryStorage())
    node = make_node(storage)
    keys = fill(node)
    state = node.require_state()
    moving = commit(state, plan(state, [], ["m0"]), "m0")
    assert moving.next is not None and moving.pending_transfers()
    node.view.state = moving
    assert await node.janitor.drop_foreign_partitions() == 0
    assert storage.range_deletes == [] and storage.scans == []
    # nor on a node that is not a member at all
    members = {k: v for k, v in state.members.items() if k != "m3"}
    node.view.state = ClusterState(state.cluster, state.n, state.ring, members)
    assert await node.janitor.drop_foreign_partitions() == 0
    assert storage.range_deletes == []
    # a plan committed in the middle of a pass stops it at the next partition
    node.view.state = state
    storage.on_delete_range = lambda: setattr(node.view, "state", moving)
    assert await node.janitor.drop_foreign_partitions() == 1
    assert len(storage.range_deletes) == 1
    left = [p for p in foreign(node) if held(storage.inner, p)]
    assert sum(len(keys[p]) for p in left) == sum(held(storage.inner, p) for p in left) > 0


async def test_a_dropped_partitions_merkle_tree_is_discarded() -> None:
    node = make_node(MemoryStorage())
    fill(node)
    p = foreign(node)[0]
    full = node.anti_entropy.tree(p).root()  # built over its data
    assert p in node.anti_entropy.trees and p in node.anti_entropy.tombstones
    await node.janitor.drop_foreign_partitions()
    assert p not in node.anti_entropy.trees and p not in node.anti_entropy.tombstones
    rebuilt = node.anti_entropy.tree(p).root()  # from the store: nothing left
    assert rebuilt != full
    assert rebuilt == make_node(MemoryStorage()).anti_entropy.tree(p).root()


async def test_rocks_compacts_the_dropped_ranges_in_the_background(tmp_path: Path) -> None:
    storage = RocksStorage(str(tmp_path / "db"), row_cache_bytes=1 << 20)
    try:
        node = make_node(storage)
        fill(node, 3000)
        storage._db.flush()  # the data in tables, as after a while
        assert await node.janitor.drop_foreign_partitions() == len(foreign(node))
        for _ in range(200):
            if storage.range_compactions:
                break
            await asyncio.sleep(0.05)
        assert storage.range_compactions >= 1
        for p in foreign(node):
            assert held(storage, p) == 0
        assert sum(held(storage, p) for p in range(Q)) > 0
    finally:
        storage.close()
