"""antientropy.exchange: the protocol between two replicas, run between in-process nodes
(exchanges are also exercised with real processes in test_membership_cluster)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from dynamo_node.cluster.antientropy.exchange import ROOTS
from dynamo_node.core.errors import InvalidRequest, PeerError
from dynamo_node.core.merkle import LAYOUT
from dynamo_node.core.vclock import VClock
from dynamo_node.store.storage import storage_key
from tests.node.cluster.test_coordinator import make_cluster

pytestmark = pytest.mark.timeout(60)


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


async def test_calls_of_another_tree_layout_are_refused() -> None:
    """A node of the old layout (during a rolling upgrade) must not compare its trees
    with ours: every key would look different and be shipped both ways."""
    _, nodes = await make_cluster(2, anti_entropy_interval_s=0.0)
    try:
        assert f"ae_roots.{LAYOUT}" == ROOTS and "ae_roots" not in nodes[1].peers.methods
        with pytest.raises((InvalidRequest, PeerError), match="unknown internal method"):
            await nodes[0].transport.call("m1", "ae_roots", [[0]], 1.0)
        assert len(await nodes[0].transport.call("m1", ROOTS, [[0, 1]], 1.0)) == 2
    finally:
        for node in nodes:
            await node.stop()


async def test_a_roots_call_lets_requests_run_between_partitions() -> None:
    """Reading a tree may rehash a whole partition: a roots call over many partitions
    yields to the loop between them instead of holding it for all of them."""
    _, nodes = await make_cluster(2, anti_entropy_interval_s=0.0)
    try:
        ae = nodes[1].anti_entropy.protocol
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
