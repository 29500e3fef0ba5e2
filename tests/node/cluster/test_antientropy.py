"""antientropy: what runs in the background (exchanges themselves are exercised with real
processes in test_membership_cluster)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from dynamo_node.cluster.antientropy import ROOTS, SEGMENTS
from dynamo_node.core.errors import InvalidRequest, PeerError
from dynamo_node.core.merkle import LAYOUT
from dynamo_node.core.vclock import VClock
from dynamo_node.store.storage import storage_key
from tests.node.cluster.test_coordinator import make_cluster

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("interval", "periodic"), [(0.0, False), (3600.0, True)])
async def test_periodic_rounds_only_with_a_positive_interval(
    interval: float, periodic: bool
) -> None:
    # interval 0 once ran the loop as asyncio.sleep(0) forever: a node spinning its core
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=interval)
    try:
        assert (node.anti_entropy._task is not None) is periodic
    finally:
        await node.stop()


async def test_exchanges_repair_what_a_replica_lost_and_only_that() -> None:
    _, nodes = await make_cluster(3, anti_entropy_interval_s=0.0)
    try:
        keys = [storage_key(f"k{i}") for i in range(300)]
        for key in keys:
            await nodes[0].coordinator.put(key, VClock(), b"v", "text/plain", 3, 1000)
        ae = nodes[0].anti_entropy
        for p in range(16):  # trees exist from here on, kept current by every write
            ae.tree(p)
        lost = keys[::37]
        for key in lost:  # m2 loses a few keys (a restored old volume, say)
            nodes[2].replica.remove(key)
        repaired = 0
        for p in range(16):
            repaired += await ae.exchange(p, "m2")
        assert repaired == len(lost)
        for key in keys:
            assert nodes[2].replica.read_encoded(key) == nodes[0].replica.read_encoded(key)
        for p in range(16):  # in step: a second pass finds nothing
            assert await ae.exchange(p, "m2") == 0
            assert ae.tree(p).root() == nodes[2].anti_entropy.tree(p).root()
    finally:
        for node in nodes:
            await node.stop()


async def test_segment_items_read_only_the_ranges_of_their_segments() -> None:
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=0.0)
    try:
        for i in range(500):
            await node.coordinator.put(storage_key(f"k{i}"), VClock(), b"v", "", 1, 1000)
        ae = node.anti_entropy
        tree = ae.tree(3)
        every = ae._segment_items(3, set(range(SEGMENTS)))
        assert len(every) == len(tree) > 0
        wanted = {tree.segment_of(k) for k in list(every)[:5]} | {
            tree.segment_of(k) + 1 for k in list(every)[5:7]
        }
        wanted &= set(range(SEGMENTS))
        some = ae._segment_items(3, wanted)
        assert some == {k: d for k, d in every.items() if tree.segment_of(k) in wanted}
        with pytest.raises(InvalidRequest):
            ae._segment_items(3, {SEGMENTS})
    finally:
        await node.stop()


async def test_calls_of_another_tree_layout_are_refused() -> None:
    """A node of the old layout (during a rolling upgrade) must not compare its trees
    with ours: every key would look different and be shipped both ways."""
    _, nodes = await make_cluster(2, anti_entropy_interval_s=0.0)
    try:
        assert f"ae_roots.{LAYOUT}" == ROOTS and "ae_roots" not in nodes[1].rpc_handlers
        with pytest.raises((InvalidRequest, PeerError), match="unknown internal method"):
            await nodes[0].transport.call("m1", "ae_roots", [[0]], 1.0)
        assert len(await nodes[0].transport.call("m1", ROOTS, [[0, 1]], 1.0)) == 2
    finally:
        for node in nodes:
            await node.stop()


async def test_trees_are_built_in_the_background_and_kept_current() -> None:
    """With periodic rounds on, a node builds every partition's tree as soon as it has a
    ring, so no exchange waits for a build; a write then marks its segment stale, and a
    read of the tree rehashes the stale segments: the tree read equals a fresh build."""
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=3600.0)
    try:
        ae = node.anti_entropy
        deadline = asyncio.get_running_loop().time() + 10
        while len(ae.trees) < 16:
            assert asyncio.get_running_loop().time() < deadline, "trees never built"
            await asyncio.sleep(0.01)
        assert set(ae.tombstones) == set(range(16))
        for i in range(200):
            await node.coordinator.put(storage_key(f"k{i}"), VClock(), b"v", "", 1, 1000)
        gone = storage_key("k7")
        await node.coordinator.put(gone, node.read(gone).context(), None, "", 1, 1000)
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


async def test_a_roots_call_lets_requests_run_between_partitions() -> None:
    """Reading a tree may rehash a whole partition: a roots call over many partitions
    yields to the loop between them instead of holding it for all of them."""
    _, nodes = await make_cluster(2, anti_entropy_interval_s=0.0)
    try:
        ae = nodes[1].anti_entropy
        ticks: list[int] = []

        async def ticker() -> None:
            while True:
                ticks.append(len(ticks))
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        try:
            await asyncio.sleep(0)
            before = len(ticks)
            roots = await ae._rpc_roots([list(range(16))], "m0")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert len(roots) == 16
        assert len(ticks) - before >= 15  # the ticker ran between the partitions
    finally:
        for node in nodes:
            await node.stop()
