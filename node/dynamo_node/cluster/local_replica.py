"""This node's own replica as the coordinator and the peer server use it.

It joins the stored replica (`store.replica`) with the hints this node keeps for others
(`store.hints`): a read merges the hints held for the key; a write carrying `hint_for`
goes to the hint store instead of the replica; a merge from a sender whose ring is stale
(this node holds no replica of the key) is passed on to the key's replicas as hints.
Durability is the commit log's: a write may be acknowledged once `durable_future()`
resolved (none: at once).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.codec import encode_object
from dynamo_node.core.vclock import VClock
from dynamo_node.core.versions import Object, sync
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.hints import HintStore
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Family, Storage


class LocalReplica:
    def __init__(
        self,
        replica: Replica,
        hints: HintStore,
        commit_log: GroupCommit,
        storage: Storage,
        view: ClusterView,
        lww: bool,
    ) -> None:
        self.replica = replica
        self.hints = hints
        self.commit_log = commit_log
        self.storage = storage
        self.view = view
        self.lww = lww

    def read(self, skey: bytes) -> Object:
        """The local version of a key: the replica's, merged with hints held for it."""
        local = self.replica.read(skey)
        if self.hints.pending:
            for obj in self.hints.for_key(skey):
                local = sync(local, obj, lww=self.lww).obj
        return local

    def read_encoded(self, skey: bytes) -> bytes | None:
        """`read`, encoded: the stored bytes as they are unless hints are held for it."""
        if not self.hints.pending:
            return self.replica.read_encoded(skey)
        local = self.read(skey)
        return None if local.empty else encode_object(local)

    def put(
        self,
        skey: bytes,
        context: VClock,
        value: bytes | None,
        content_type: str,
        hint_for: str | None,
    ) -> Object:
        if hint_for:
            current = self.hints.read(skey, hint_for)
            ops: list[Any] = []
            new = self.replica.new_version(current, context, value, content_type, ops, skey=skey)
            self.hints.store(skey, hint_for, new, ops)
            return new
        return self.replica.apply_put(skey, context, value, content_type)

    def merge(self, skey: bytes, obj: Object, hint_for: str | None) -> None:
        if hint_for:
            self.hints.store(skey, hint_for, obj)
            return
        self.replica.apply_merge(skey, obj)
        if not self.view.replicates_here(skey):
            # a sender with a stale ring: pass it on to the replicas as hints
            for node in self.view.replicates(skey):
                self.hints.store(skey, node, obj)

    def merge_encoded(self, skey: bytes, data: bytes) -> bool:
        """Merge stored bytes as they are, when this node replicates the key and the
        bytes need no decoding (see `Replica.merge_encoded`); False: decode and `merge`."""
        return self.view.replicates_here(skey) and self.replica.merge_encoded(skey, data)

    def durable_future(self) -> asyncio.Future[None] | None:
        """None when the writes made so far may be acknowledged; else a future resolved
        once they may: with durability "sync" after their fsync, with "wal" once their
        group is applied (in the WAL)."""
        return self.commit_log.barrier_future()

    async def durable(self) -> None:
        await self.commit_log.barrier()

    def holds_data(self) -> bool:
        """Whether this node stores any object or hint, or has a write in flight."""
        if self.hints.pending > 0 or self.storage.has_pending():
            return True
        scan = self.storage.iter_range(Family.OBJECTS)
        try:
            return next(scan, None) is not None
        finally:
            close = getattr(scan, "close", None)
            if close is not None:
                close()
