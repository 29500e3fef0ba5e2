"""Partition transfers (handoff) and dropping data a node no longer replicates.

After a committed plan, every transfer (partition, source, target) whose source is this
node is streamed in batches of `transfer_batch_keys` with `merge_many` calls, at most
`transfer_concurrency` partitions at a time, pausing `transfer_batch_pause_s` between
batches (throttle). A cursor saved in the meta column family after each batch makes a
stream resumable after a crash of either side; a refused batch is retried. Only when
the stream is complete is the transfer marked done in the cluster state (gossiped), so
ownership switches after the data moved, never before. Once the ring settles, the
janitor deletes the partitions this node is no longer a replica of.

Dropping a partition is one range delete of its key range (`Storage.delete_range`: a
range tombstone, O(1) on the loop; the space is reclaimed by a compaction in the
background) and the reset of its Merkle tree, one partition per loop iteration. A
dropped partition is remembered (per ring version) and never looked at again: deleting
key by key left a tombstone per key, and every later pass re-scanned the dropped ranges
stepping over all of them (seconds on the loop per pass at 1M keys). Only a write that
lands in a dropped partition afterwards (a coordinator with an older ring) makes it due
again, seen by the replica's change listener. A partition not yet remembered (after a
start, or under a new ring) costs one seek to find whether it holds anything.

A transfer out of a partition one of whose replicas was removed for good (force-remove,
replace) is a *rebuild*: the receiving node pulls the partition from every surviving
replica with the anti-entropy exchange, waiting while one of them is down (with W
below N an acknowledged write may live on that replica only), then marks it done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynamo_node.core.errors import PeerError
from dynamo_node.core.ring import partition_of
from dynamo_node.store.storage import Family, partition_keys, skey_hash

if TYPE_CHECKING:
    from dynamo_node.core.membership import ClusterState
    from dynamo_node.node import Node

log = logging.getLogger("dynamo.handoff")

META_XFER = b"xfer:"
JANITOR_INTERVAL_S = 2.0
RETRY_PAUSE_S = 1.0


@dataclass(slots=True)
class TransferProgress:
    partition: int
    source: str
    target: str
    keys_done: int = 0
    keys_total: int = 0


class Handoff:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.progress: dict[tuple[int, str], TransferProgress] = {}
        self.keys_sent = 0
        self.keys_received = 0
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        #: partitions dropped under ring `_dropped_ring` (and not written to since)
        self._dropped: set[int] = set()
        self._dropped_ring: tuple[int, int] | None = None
        #: partitions dropped since the start
        self.partitions_dropped = 0
        node.replica.listeners.append(self._on_change)

    def _on_change(self, skey: bytes, old: bytes | None, new: bytes | None) -> None:
        """A write into a dropped partition makes the janitor drop it again."""
        if self._dropped and new is not None:
            state = self.node.state
            if state is not None:
                self._dropped.discard(partition_of(skey_hash(skey), state.partitions))

    def received(self, count: int) -> None:
        self.keys_received += count

    # --- sending ---------------------------------------------------------------------------
    async def run(self) -> None:
        node = self.node
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)
            self._wake.clear()
            state = node.state
            if state is None or state.next is None:
                continue
            for t in state.pending_transfers():
                key = (t.partition, t.target)
                mine = t.target if t.rebuild else t.source
                if mine != node.node_id or key in self._tasks:
                    continue
                if len(self._tasks) >= node.config.transfer_concurrency:
                    break
                work = (
                    self._rebuild(state.epoch, t.partition)
                    if t.rebuild
                    else self._stream(state.epoch, t.partition, t.target)
                )
                task = asyncio.create_task(work)
                self._tasks[key] = task
                task.add_done_callback(self._finished(key))

    def _finished(self, key: tuple[int, str]) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            self._wake.set()

        return done

    async def _stream(self, epoch: int, p: int, target: str) -> None:
        node = self.node
        storage, config = node.storage, node.config
        state = node.require_state()
        start, end = partition_keys(p, state.partitions)
        cursor_key = META_XFER + f"{epoch}:{p}:{target}".encode()
        saved = storage.get(Family.META, cursor_key)
        cursor = saved if saved is not None else start
        total = sum(1 for _ in storage.iter_range(Family.OBJECTS, start, end))
        progress = TransferProgress(p, node.node_id, target, 0, total)
        if saved is not None:
            progress.keys_done = sum(1 for _ in storage.iter_range(Family.OBJECTS, start, saved))
        self.progress[(p, target)] = progress
        timeout = max(5.0, config.request_timeout_ms / 1000)
        try:
            while True:
                batch = storage.scan(Family.OBJECTS, cursor, end, config.transfer_batch_keys)
                if batch:
                    while True:
                        try:
                            await node.transport.call(target, "merge_many", batch, timeout)
                            break
                        except PeerError as exc:
                            log.warning("transfer of %d to %s paused: %s", p, target, exc)
                            await asyncio.sleep(RETRY_PAUSE_S)
                    progress.keys_done += len(batch)
                    self.keys_sent += len(batch)
                    cursor = batch[-1][0] + b"\x00"
                    storage.write([(Family.META, cursor_key, cursor)])
                    node.commit_log.issued()
                if config.transfer_batch_pause_s:
                    await asyncio.sleep(config.transfer_batch_pause_s)
                if len(batch) < config.transfer_batch_keys:
                    break
            if node.require_state().epoch != epoch:
                return
            storage.write([(Family.META, cursor_key, None)])
            self._mark_done(epoch, p, target, progress.keys_done)
        finally:
            self.progress.pop((p, target), None)

    def _mark_done(self, epoch: int, p: int, target: str, keys: int) -> bool:
        node = self.node
        current = node.require_state()
        if current.epoch != epoch:
            return False
        node.set_state(current.with_done(p, target).settle())
        log.debug("transferred partition %d to %s (%d keys)", p, target, keys)
        if not node.require_state().in_transition():
            log.info("all transfers of plan %d are complete", epoch)
        node.gossiper.push_soon()
        return True

    async def _rebuild(self, epoch: int, p: int) -> None:
        """Pull partition p from every surviving replica (a replica was removed)."""
        node = self.node
        me = node.node_id
        state = node.require_state()
        survivors = [
            r for r in state.ring.preference_list(p, state.n) if r not in state.removed and r != me
        ]
        progress = TransferProgress(p, ",".join(survivors), me)
        self.progress[(p, me)] = progress
        try:
            pending = list(survivors)
            waited: set[str] = set()
            while pending:
                if node.require_state().epoch != epoch:
                    return
                peer = pending[0]
                if not node.is_up(peer):
                    if peer not in waited:  # once per replica, not every retry
                        waited.add(peer)
                        log.warning("rebuild of partition %d waits for replica %s", p, peer)
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                try:
                    progress.keys_done += await node.anti_entropy.exchange(p, peer)
                except Exception as exc:
                    log.warning("rebuild of partition %d from %s paused: %s", p, peer, exc)
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                pending.pop(0)
            self.keys_received += progress.keys_done
            if self._mark_done(epoch, p, me, progress.keys_done):
                log.info(
                    "rebuilt partition %d from %s (%d keys)",
                    p,
                    ", ".join(survivors),
                    progress.keys_done,
                )
        finally:
            self.progress.pop((p, me), None)

    # --- janitor ---------------------------------------------------------------------------
    async def janitor(self) -> None:
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
        node = self.node
        me = node.node_id
        state = node.state
        if state is None or not self._settled(state, me):
            return 0
        ring = (state.ring.version, state.partitions)
        if ring != self._dropped_ring:
            self._dropped, self._dropped_ring = set(), ring
        dropped = 0
        for p in range(state.partitions):
            if p in self._dropped:
                continue
            state = node.state  # may have changed at the last yield: checked again
            if state is None or not self._settled(state, me):
                break
            if (state.ring.version, state.partitions) != ring:
                break  # the next pass starts over with the new ring
            if me in state.preference_list(p):
                continue
            start, end = partition_keys(p, state.partitions)
            # one seek: a range already empty (dropped before a restart or under an
            # earlier ring) costs no range tombstone and no compaction
            if node.storage.scan(Family.OBJECTS, start, end, 1):
                node.storage.delete_range(Family.OBJECTS, start, end)
                node.commit_log.issued()
                dropped += 1
            node.anti_entropy.discard(p)
            self._dropped.add(p)
            await asyncio.sleep(0)
        if dropped:
            self.partitions_dropped += dropped
            log.info("dropped %d partition(s) this node no longer replicates", dropped)
        return dropped

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
