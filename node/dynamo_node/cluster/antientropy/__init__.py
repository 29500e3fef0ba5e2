"""Merkle-tree anti-entropy between the replicas of each partition, and tombstone GC.

The parts, wired by the facade `AntiEntropy`:

- `trees` (`MerkleTrees`): one `merkle.MerkleTree` per partition, built from one scan
  per partition, in the background once the node has a ring (or at first use); after
  that a write only marks its segment stale through the replica's change listener, and
  reading a tree rehashes its stale segments from their key ranges. A clean stop saves
  the trees, and the next start loads them if the marker it wrote matches ("Saved
  trees" there); dropping a partition (`discard`) forgets its tree.
- `exchange` (`ExchangeProtocol`): the protocol between two replicas. It compares the
  roots of many partitions in one call, descends only into differing subtrees
  (`merkle.adiff_segments`), lists the keys of differing segments only, and ships only
  the differing objects, both ways; both sides end with the merge of both versions, so
  one exchange makes a pair of replicas identical. Traffic therefore grows with the
  number of differences, not with the data size (bench/antientropy.py measures it).
- `tombstones` (`TombstoneGC`): a key whose every sibling is a tombstone older than the
  grace period is purged only when every replica of its partition is up and holds the
  very same object (same digest); each replica then deletes it with a
  compare-and-delete.
- `jobs` (`JobRunner`, `Job`): the full run an admin starts (its state and progress),
  and the periodic run of the scheduler loop.
"""

from __future__ import annotations

from dynamo_node.cluster.antientropy.exchange import ExchangeProtocol, PeerCalls
from dynamo_node.cluster.antientropy.jobs import Job, JobRunner
from dynamo_node.cluster.antientropy.tombstones import TombstoneGC
from dynamo_node.cluster.antientropy.trees import SAVED_TREES_MARKER, MerkleTrees
from dynamo_node.cluster.peer_server import PeerServer
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.merkle import MerkleTree
from dynamo_node.net.transport import Transport
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Storage

__all__ = ["SAVED_TREES_MARKER", "AntiEntropy", "Job"]


class AntiEntropy:
    """The four parts, wired; what the rest of the node calls."""

    def __init__(
        self,
        view: ClusterView,
        replica: Replica,
        storage: Storage,
        commit_log: GroupCommit,
        transport: Transport,
        peers: PeerServer,
        config: NodeConfig,
        actor: str,
    ) -> None:
        self.merkle = MerkleTrees(view, storage, commit_log, replica, actor)
        self.calls = PeerCalls(transport, config)
        self.protocol = ExchangeProtocol(self.merkle, replica, commit_log, self.calls, peers)
        self.gc = TombstoneGC(view, replica, commit_log, self.merkle, self.calls, config, peers)
        self.runner = JobRunner(view, self.merkle, self.protocol, self.gc, config, peers)

    # --- trees -------------------------------------------------------------------------
    @property
    def trees(self) -> dict[int, MerkleTree]:
        return self.merkle.trees

    @property
    def tombstones(self) -> dict[int, set[bytes]]:
        return self.merkle.tombstones

    @property
    def loaded(self) -> set[int]:
        """The partitions whose tree was loaded from a clean stop at this start."""
        return self.merkle.loaded

    def tree(self, p: int) -> MerkleTree:
        return self.merkle.tree(p)

    def discard(self, p: int) -> None:
        self.merkle.discard(p)

    def save(self) -> bool:
        return self.merkle.save()

    # --- exchanges and jobs ----------------------------------------------------------
    async def exchange(self, p: int, peer: str) -> int:
        return await self.protocol.exchange(p, peer)

    @property
    def jobs(self) -> dict[str, Job]:
        return self.runner.jobs

    @property
    def last_run(self) -> float | None:
        """When the last full anti-entropy job finished (time.time()), or None."""
        return self.runner.last_run

    def start_job(self) -> str:
        return self.runner.start_job()

    def start(self) -> None:
        self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()

    def counters(self) -> dict[str, float]:
        return {
            "anti_entropy_exchanges_total": self.protocol.exchanges,
            "anti_entropy_keys_repaired_total": self.protocol.keys_repaired,
            "anti_entropy_bytes_sent_total": self.calls.bytes_sent,
            "anti_entropy_bytes_received_total": self.calls.bytes_received,
            "tombstones_purged_total": self.gc.purged,
        }
