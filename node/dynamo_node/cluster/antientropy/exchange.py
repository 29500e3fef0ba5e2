"""The exchange protocol between two replicas of a partition.

One call compares the roots of many partitions (`ROOTS`); an exchange then descends
only into differing subtrees, level by level (`HASHES`, `merkle.adiff_segments`), lists
the keys of differing segments only (`KEYS`), and ships only the differing objects,
both ways (`merge_many` to the peer, `ae_fetch` from it): both sides end with the merge
of both versions, so one exchange makes a pair of replicas identical. Traffic therefore
grows with the number of differences, not with the data size (bench/antientropy.py
measures it). The calls that compare trees carry the tree layout in their names.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack

from dynamo_node.cluster.antientropy.trees import MerkleTrees
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.core.codec import CodecError, decode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.merkle import LAYOUT, adiff_segments, diff_keys
from dynamo_node.net.transport import Transport
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import Replica

log = logging.getLogger("dynamo.antientropy")

#: the calls that exchange trees carry the tree layout in their names: nodes of two
#: layouts (during a rolling upgrade) refuse each other's exchanges instead of seeing
#: every key differ
ROOTS, HASHES, KEYS = (f"ae_{name}.{LAYOUT}" for name in ("roots", "hashes", "keys"))
SHIP_BATCH = 500


class PeerCalls:
    """The anti-entropy calls to peers, with byte accounting."""

    def __init__(self, transport: Transport, config: NodeConfig) -> None:
        self.transport = transport
        self.config = config
        self.bytes_sent = 0
        self.bytes_received = 0

    def exchanged(self) -> int:
        """The bytes sent and received so far."""
        return self.bytes_sent + self.bytes_received

    async def call(self, peer: str, method: str, args: Any) -> Any:
        sent = len(msgpack.packb(args, use_bin_type=True))
        timeout = max(10.0, self.config.request_timeout_ms / 1000)
        result = await self.transport.call(peer, method, args, timeout)
        received = len(msgpack.packb(result, use_bin_type=True))
        self.bytes_sent += sent
        self.bytes_received += received
        return result


class _RemoteTree:
    def __init__(self, calls: PeerCalls, peer: str, p: int) -> None:
        self._calls, self._peer, self._p = calls, peer, p

    async def hashes(self, level: int, indices: list[int] | Any) -> list[bytes]:
        result = await self._calls.call(self._peer, HASHES, [self._p, level, list(indices)])
        return [bytes(h) for h in result]


class ExchangeProtocol:
    def __init__(
        self,
        merkle: MerkleTrees,
        replica: Replica,
        commit_log: GroupCommit,
        calls: PeerCalls,
        peers: PeerServer,
    ) -> None:
        self.merkle = merkle
        self.replica = replica
        self.commit_log = commit_log
        self.calls = calls
        self.exchanges = 0
        self.keys_repaired = 0
        peers.register(ROOTS, self._rpc_roots)
        peers.register(HASHES, self._rpc_hashes)
        peers.register(KEYS, self._rpc_keys)
        peers.register("ae_fetch", self._rpc_fetch)

    async def exchange(self, p: int, peer: str) -> int:
        """Make this node's replica of p and peer's identical; returns keys repaired."""
        self.exchanges += 1
        call = self.calls.call
        local = self.merkle.tree(p)
        (root,) = await call(peer, ROOTS, [[p]])
        if bytes(root) == local.root():
            return 0
        segments, _ = await adiff_segments(local, _RemoteTree(self.calls, peer, p))
        if not segments:
            return 0
        wanted = set(segments)
        local_items = self.merkle.segment_items(p, wanted)
        remote_items = {bytes(k): bytes(d) for k, d in await call(peer, KEYS, [p, segments])}
        only_local, only_remote, differing = diff_keys(local_items, remote_items)
        push = [*only_local, *differing]
        pull = [*only_remote, *differing]
        for i in range(0, len(push), SHIP_BATCH):
            batch = []
            for skey in push[i : i + SHIP_BATCH]:
                raw = self.replica.read_encoded(skey)
                if raw is not None:
                    batch.append([skey, raw])
            if batch:
                await call(peer, "merge_many", batch)
        for i in range(0, len(pull), SHIP_BATCH):
            fetched = await call(peer, "ae_fetch", [pull[i : i + SHIP_BATCH]])
            for skey, raw in fetched:
                if raw is None:
                    continue
                try:
                    obj = decode_object(raw)
                except CodecError:
                    continue
                self.replica.apply_merge(bytes(skey), obj)
        await self.commit_log.barrier()
        repaired = len(set(push) | set(pull))
        self.keys_repaired += repaired
        if repaired:
            log.info("anti-entropy repaired %d key(s) of partition %d with %s", repaired, p, peer)
        return repaired

    async def differing(self, peer: str, partitions: list[int]) -> list[int]:
        """The partitions among `partitions` whose roots differ on `peer` (one call)."""
        roots = await self.calls.call(peer, ROOTS, [partitions])
        differing = []
        for p, root in zip(partitions, roots, strict=True):
            if bytes(root) != self.merkle.tree(p).root():
                differing.append(p)
            await asyncio.sleep(0)  # see _rpc_roots
        return differing

    # --- server side ---------------------------------------------------------------------
    async def _rpc_roots(self, args: Any, caller: str) -> list[bytes]:
        roots = []
        for p in args[0]:
            roots.append(self.merkle.tree(self.merkle.check_partition(p)).root())
            # a tree read rehashes the segments written since the last one (a whole
            # partition's after a minute of writes): requests get the loop in between
            await asyncio.sleep(0)
        return roots

    async def _rpc_hashes(self, args: Any, caller: str) -> list[bytes]:
        p, level, indices = args
        tree = self.merkle.tree(self.merkle.check_partition(p))
        return tree.hashes(int(level), [int(i) for i in indices])

    async def _rpc_keys(self, args: Any, caller: str) -> list[list[bytes]]:
        p, segments = args
        items = self.merkle.segment_items(
            self.merkle.check_partition(p), {int(s) for s in segments}
        )
        return [[k, d] for k, d in items.items()]

    async def _rpc_fetch(self, args: Any, caller: str) -> list[list[Any]]:
        return [[skey, self.replica.read_encoded(bytes(skey))] for skey in args[0]]
