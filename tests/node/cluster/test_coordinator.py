"""Coordinator logic over the in-memory transport: quorums, sloppy quorum, hints, read
repair and deadlines, with no sockets (several Nodes in one event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dynamo_node.cluster.coordinator import _Votes
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import QuorumNotMet, StorageCorrupt, Unavailable
from dynamo_node.core.membership import ClusterState, commit, plan
from dynamo_node.core.vclock import VClock
from dynamo_node.net.transport import Handler, MemoryTransport
from dynamo_node.node import Node
from dynamo_node.store.storage import Family, MemoryStorage, storage_key

pytestmark = pytest.mark.timeout(60)


class Net:
    def __init__(self) -> None:
        self.registry: dict[str, Handler] = {}
        self.transports: dict[str, MemoryTransport] = {}
        self.down: set[str] = set()
        self.paused: set[str] = set()

    def factory(self, node: Node) -> MemoryTransport:
        t = MemoryTransport(node.node_id, self.registry)
        t.down = self.down
        t.paused = self.paused
        self.transports[node.node_id] = t
        return t


async def make_cluster(count: int, **cfg: object) -> tuple[Net, list[Node]]:
    net = Net()
    nodes: list[Node] = []
    settings: dict[str, object] = {"gossip_interval_s": 3600.0, "hint_delivery_interval_s": 3600.0}
    settings.update(cfg)
    for i in range(count):
        config = NodeConfig(data_dir="", port=7000 + i, node_id=f"m{i}", partitions=16, **settings)  # type: ignore[arg-type]
        node = Node(config, MemoryStorage(), net.factory, serve_peers=False)
        net.registry[node.node_id] = node.peers.handle
        nodes.append(node)
    # one founding state with every node in the ring, given to all (no gossip needed)
    state = ClusterState.founding("test", nodes[0].member, 16, 3)
    for node in nodes[1:]:
        state = state.with_member(node.member)
    staged = plan(state, [n.node_id for n in nodes[1:]], [])
    state = commit(state, staged, "m0")
    for t in state.pending_transfers():
        state = state.with_done(t.partition, t.target)
    state = state.settle()
    for node in nodes:
        node.view.state = state
        await node.start()
        for other in nodes:
            node.view.detector.heard(other.node_id, time.monotonic())
    return net, nodes


@pytest.fixture
async def three() -> AsyncIterator[tuple[Net, list[Node]]]:
    net, nodes = await make_cluster(3)
    yield net, nodes
    for node in nodes:
        await node.stop()


async def test_put_then_get_from_any_coordinator(three: tuple[Net, list[Node]]) -> None:
    _, nodes = three
    key = storage_key("k")
    await nodes[0].coordinator.put(key, VClock(), b"v", "text/plain", None, 1000)
    for node in nodes:
        obj = await node.coordinator.get(key, 3, 1000)
        assert [s.value for s in obj.visible()] == [b"v"]


async def test_down_replica_gets_hint_and_quorum_rules(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    key = storage_key("k2")
    net.down.add("m2")
    await nodes[0].coordinator.put(key, VClock(), b"v", "", 2, 1000)
    with pytest.raises(QuorumNotMet) as info:
        await nodes[0].coordinator.put(key, VClock(), b"w", "", 3, 1000)
    assert info.value.answered == 2 and info.value.required == 3
    assert sum(n.hints.pending for n in nodes) >= 1
    # the replica comes back: hints are delivered, then it alone serves both versions
    net.down.discard("m2")
    for node in nodes:
        await node.hints.deliver_once(node.hint_delivery.deliver, lambda _n: True)
    assert sum(n.hints.pending for n in nodes) == 0
    assert sorted(s.value for s in nodes[2].replica.read(key).visible()) == [b"v", b"w"]


async def test_paused_replicas_fail_within_deadline(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    net.paused.update({"m1", "m2"})
    start = time.monotonic()
    with pytest.raises(QuorumNotMet):
        await nodes[0].coordinator.put(storage_key("k3"), VClock(), b"v", "", 2, 300)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, elapsed  # bounded by the deadline (0.3 s), never a hang
    with pytest.raises(QuorumNotMet):
        await nodes[0].coordinator.get(storage_key("k3"), 2, 300)


async def test_read_repair_fixes_stale_replica(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    key = storage_key("k4")
    net.down.add("m2")
    await nodes[0].coordinator.put(key, VClock(), b"new", "", 2, 1000)
    net.down.discard("m2")
    for node in nodes:  # drop hints so that only read repair can fix m2
        for hk, _ in node.storage.scan(Family.HINTS):
            node.storage.write([(Family.HINTS, hk, None)])
    assert nodes[2].replica.read(key).empty
    nodes[0].view.detector.heard("m2", time.monotonic())
    obj = await nodes[0].coordinator.get(key, 2, 1000)
    assert [s.value for s in obj.visible()] == [b"new"]
    deadline = time.monotonic() + 5
    while nodes[2].replica.read(key).empty and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [s.value for s in nodes[2].replica.read(key).visible()] == [b"new"]


async def test_concurrent_blind_writes_make_siblings_resolved_by_context(
    three: tuple[Net, list[Node]],
) -> None:
    _, nodes = three
    key = storage_key("cart")
    await nodes[0].coordinator.put(key, VClock(), b"a", "", None, 1000)
    await nodes[1].coordinator.put(key, VClock(), b"b", "", None, 1000)
    obj = await nodes[2].coordinator.get(key, 3, 1000)
    assert sorted(s.value for s in obj.visible()) == [b"a", b"b"]
    await nodes[2].coordinator.put(key, obj.context(), b"ab", "", 3, 1000)
    obj = await nodes[0].coordinator.get(key, 3, 1000)
    assert [s.value for s in obj.visible()] == [b"ab"]


# --- the votes of one write ------------------------------------------------------------
async def test_votes_resolve_at_quorum_and_not_before_the_local_write_is_durable() -> None:
    loop = asyncio.get_running_loop()
    votes = _Votes(loop, need=1, replicas=2)
    local: asyncio.Future[None] = loop.create_future()
    votes.wait_local(local)
    waiting = asyncio.ensure_future(votes.wait(loop.time() + 5))
    votes.vote(True)  # quorum, but the coordinator's own write is not durable yet
    await asyncio.sleep(0.01)
    assert not waiting.done()
    local.set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert votes.ok == 1
    votes.vote(True)  # a late vote still counts, harmlessly
    assert votes.ok == 2


async def test_votes_end_at_the_deadline_or_when_all_replicas_voted() -> None:
    loop = asyncio.get_running_loop()
    votes = _Votes(loop, need=2, replicas=2)
    start = loop.time()
    votes.vote(True)
    await votes.wait(loop.time() + 0.1)  # the other replica never answers
    assert votes.ok == 1 and 0.09 <= loop.time() - start < 1
    votes = _Votes(loop, need=2, replicas=2)
    votes.vote(False)
    votes.vote(True)
    await asyncio.wait_for(votes.wait(loop.time() + 5), 0.5)  # all voted: no waiting
    assert votes.ok == 1
    votes = _Votes(loop, need=0, replicas=0)  # W=1 and no other replica
    await asyncio.wait_for(votes.wait(loop.time() + 5), 0.5)


async def test_votes_past_the_deadline_still_wait_for_the_local_write() -> None:
    loop = asyncio.get_running_loop()
    votes = _Votes(loop, need=1, replicas=1)
    local: asyncio.Future[None] = loop.create_future()
    votes.wait_local(local)
    waiting = asyncio.ensure_future(votes.wait(loop.time() + 0.05))
    await asyncio.sleep(0.15)
    assert not waiting.done()  # never acknowledged before it is durable here
    local.set_exception(Unavailable("the storage failed"))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 1)
    failed: asyncio.Future[None] = loop.create_future()
    failed.set_exception(Unavailable("already failed"))
    votes = _Votes(loop, need=0, replicas=0)
    votes.wait_local(failed)
    with pytest.raises(Unavailable):
        await votes.wait(loop.time() + 5)


async def test_a_corrupt_local_replica_counts_as_not_answering(
    three: tuple[Net, list[Node]],
) -> None:
    _, nodes = three
    key = storage_key("damaged")
    await nodes[0].coordinator.put(key, VClock(), b"v", "text/plain", 3, 1000)

    def damaged(_skey: bytes) -> bytes | None:
        raise StorageCorrupt("Corruption: block checksum mismatch in 000009.sst")

    nodes[0].local.read_encoded = damaged  # type: ignore[method-assign]
    obj = await nodes[0].coordinator.get(key, 2, 1000)
    assert [s.value for s in obj.visible()] == [b"v"]
    with pytest.raises(QuorumNotMet):
        await nodes[0].coordinator.get(key, 3, 1000)
