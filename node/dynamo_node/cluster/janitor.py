"""The janitor: dropping the partitions this node no longer replicates.

Once the ring settles (no plan in progress, so no transfer out of a partition is
pending; see `transfer`), the janitor drops every partition this node is not a replica
of, one partition per loop iteration, every `JANITOR_INTERVAL_S`. Dropping a partition
is one range delete of its key range (`Replica.drop_partition`: a range tombstone, O(1)
on the loop; the space is reclaimed by a compaction in the background) and the reset of
its Merkle tree (`discard`). A dropped partition is remembered (per ring version) and
never looked at again: deleting key by key left a tombstone per key, and every later
pass re-scanned the dropped ranges stepping over all of them (seconds on the loop per
pass at 1M keys). Only a write that lands in a dropped partition afterwards (a
coordinator with an older ring) makes it due again, seen by the replica's change
listener. A partition not yet remembered (after a start, or under a new ring) costs one
seek to find whether it holds anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.membership import ClusterState
from dynamo_node.core.ring import partition_of
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import skey_hash

log = logging.getLogger("dynamo.handoff")

JANITOR_INTERVAL_S = 2.0


class Janitor:
    def __init__(self, view: ClusterView, replica: Replica, discard: Callable[[int], None]) -> None:
        self.view = view
        self.replica = replica
        #: forget a dropped partition's Merkle tree (anti-entropy)
        self.discard = discard
        #: partitions dropped under ring `_dropped_ring` (and not written to since)
        self._dropped: set[int] = set()
        self._dropped_ring: tuple[int, int] | None = None
        #: partitions dropped since the start
        self.partitions_dropped = 0
        replica.listeners.append(self._on_change)

    def _on_change(self, skey: bytes, old: bytes | None, new: bytes | None) -> None:
        """A write into a dropped partition makes the janitor drop it again."""
        if self._dropped and new is not None:
            state = self.view.state
            if state is not None:
                self._dropped.discard(partition_of(skey_hash(skey), state.partitions))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_INTERVAL_S)
            try:
                await self.drop_foreign_partitions()
            except Exception:
                log.exception("janitor failed")

    @staticmethod
    def _settled(state: ClusterState | None, me: str) -> bool:
        return state is not None and state.next is None and me in state.members

    async def drop_foreign_partitions(self) -> int:
        """Drop every partition this node is not a replica of in the settled ring (no
        plan in progress, so no transfer out of it is pending); returns how many held
        data and were dropped in this pass (each one once, see the module docstring)."""
        view = self.view
        me = view.node_id
        state = view.state
        if state is None or not self._settled(state, me):
            return 0
        ring = (state.ring.version, state.partitions)
        if ring != self._dropped_ring:
            self._dropped, self._dropped_ring = set(), ring
        dropped = 0
        for p in range(state.partitions):
            if p in self._dropped:
                continue
            state = view.state  # may have changed at the last yield: checked again
            if state is None or not self._settled(state, me):
                break
            if (state.ring.version, state.partitions) != ring:
                break  # the next pass starts over with the new ring
            if me in state.preference_list(p):
                continue
            if self.replica.drop_partition(p, state.partitions):
                dropped += 1
            self.discard(p)
            self._dropped.add(p)
            await asyncio.sleep(0)
        if dropped:
            self.partitions_dropped += dropped
            log.info("dropped %d partition(s) this node no longer replicates", dropped)
        return dropped
