"""Tombstone GC: purging deleted keys once every replica agrees.

A key whose every sibling is a tombstone older than the grace period
(`NodeConfig.tombstone_grace_s`) is purged only when every replica of its partition is
up and holds the very same object (same digest, `ae_digests`); each replica then
deletes it with a compare-and-delete (`ae_gc`). The keys that may be all tombstones are
the candidates the Merkle trees keep per partition (`MerkleTrees.tombstone_candidates`).
"""

from __future__ import annotations

import time
from typing import Any

from dynamo_node.cluster.antientropy.exchange import PeerCalls
from dynamo_node.cluster.antientropy.trees import MerkleTrees
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.codec import CodecError, decode_object, digest
from dynamo_node.core.config import NodeConfig
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import Replica

GC_BATCH = 200


class TombstoneGC:
    def __init__(
        self,
        view: ClusterView,
        replica: Replica,
        commit_log: GroupCommit,
        merkle: MerkleTrees,
        calls: PeerCalls,
        config: NodeConfig,
        peers: PeerServer,
    ) -> None:
        self.view = view
        self.replica = replica
        self.commit_log = commit_log
        #: where the tombstone candidates of each partition are kept current
        self.merkle = merkle
        self.calls = calls
        self.config = config
        self.purged = 0
        peers.register("ae_digests", self._rpc_digests)
        peers.register("ae_gc", self._rpc_gc)

    async def collect(self, p: int) -> int:
        """Purge p's agreed tombstones (on every replica); returns how many."""
        view = self.view
        state = view.require_state()
        replicas = state.preference_list(p)
        if view.node_id not in replicas or not all(view.is_up(r) for r in replicas):
            return 0
        grace_ms = int(self.config.tombstone_grace_s * 1000)
        now_ms = time.time_ns() // 1_000_000
        known = self.merkle.tombstone_candidates(p)
        candidates: list[tuple[bytes, bytes]] = []
        for skey in sorted(known):
            raw = self.replica.read_encoded(skey)
            try:
                obj = decode_object(raw) if raw is not None else None
            except CodecError:
                obj = None
            if obj is None or not obj.all_tombstones():
                known.discard(skey)  # purged, or written again since
                continue
            if now_ms - obj.max_timestamp() >= grace_ms:
                candidates.append((skey, digest(raw)))  # type: ignore[arg-type]
        purged = 0
        peers = [r for r in replicas if r != view.node_id]
        for i in range(0, len(candidates), GC_BATCH):
            batch = candidates[i : i + GC_BATCH]
            keys = [k for k, _ in batch]
            agreed = set(keys)
            for peer in peers:
                digests = await self.calls.call(peer, "ae_digests", [keys])
                agreed &= {
                    k
                    for (k, d), theirs in zip(batch, digests, strict=True)
                    if theirs is not None and bytes(theirs) == d
                }
            final = [[k, d] for k, d in batch if k in agreed]
            if not final:
                continue
            for peer in peers:
                await self.calls.call(peer, "ae_gc", [final])
            purged += self._gc_local(final)
        self.purged += purged
        return purged

    def _gc_local(self, items: list[list[bytes]] | list[Any]) -> int:
        purged = 0
        for skey, want in items:
            raw = self.replica.read_encoded(bytes(skey))
            if raw is not None and digest(raw) == bytes(want):
                self.replica.remove(bytes(skey))
                purged += 1
        return purged

    # --- server side ---------------------------------------------------------------------
    async def _rpc_digests(self, args: Any, caller: str) -> list[bytes | None]:
        out: list[bytes | None] = []
        for skey in args[0]:
            raw = self.replica.read_encoded(bytes(skey))
            out.append(digest(raw) if raw is not None else None)
        return out

    async def _rpc_gc(self, args: Any, caller: str) -> int:
        purged = self._gc_local(args[0])
        await self.commit_log.barrier()
        return purged
