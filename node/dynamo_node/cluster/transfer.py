"""Partition transfers (handoff), the sending side: streaming partitions to their new
owners after a committed plan, and rebuilding those that lost a replica for good.

After a committed plan, every transfer (partition, source, target) whose source is this
node is streamed in batches of `transfer_batch_keys` with `merge_many` calls, at most
`transfer_concurrency` partitions at a time, pausing `transfer_batch_pause_s` between
batches (throttle). A cursor saved in the meta column family after each batch makes a
stream resumable after a crash of either side; a refused batch is retried. Only when
the stream is complete is the transfer marked done in the cluster state (gossiped), so
ownership switches after the data moved, never before. (The receiving side is the peer
server's `merge_many`; it reports the keys it received to `received`. Once the ring
settles, the janitor drops what this node no longer replicates: see `janitor`.)

A transfer out of a partition one of whose replicas was removed for good (force-remove,
replace) is a *rebuild*: the receiving node pulls the partition from every surviving
replica with the anti-entropy exchange, waiting while one of them is down (with W
below N an acknowledged write may live on that replica only), then marks it done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import PeerError
from dynamo_node.net.transport import Transport
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.storage import Family, Storage, partition_keys

#: an anti-entropy exchange of one partition with one peer: the keys it repaired
Exchange = Callable[[int, str], Awaitable[int]]

log = logging.getLogger("dynamo.handoff")

META_XFER = b"xfer:"
RETRY_PAUSE_S = 1.0


@dataclass(slots=True)
class TransferProgress:
    partition: int
    source: str
    target: str
    keys_done: int = 0
    keys_total: int = 0


class Transfers:
    def __init__(
        self,
        view: ClusterView,
        transport: Transport,
        config: NodeConfig,
        storage: Storage,
        commit_log: GroupCommit,
        exchange: Exchange,
        announce: Callable[[], None],
    ) -> None:
        self.view = view
        self.transport = transport
        self.config = config
        #: read for the partitions streamed; written only for the cursors (meta)
        self.storage = storage
        self.commit_log = commit_log
        #: pull a partition from a surviving replica (a rebuild)
        self.exchange = exchange
        #: send the state to the members soon (a transfer was marked done)
        self.announce = announce
        self.progress: dict[tuple[int, str], TransferProgress] = {}
        self.keys_sent = 0
        self.keys_received = 0
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def received(self, count: int) -> None:
        self.keys_received += count

    async def run(self) -> None:
        view = self.view
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)
            self._wake.clear()
            state = view.state
            if state is None or state.next is None:
                continue
            for t in state.pending_transfers():
                key = (t.partition, t.target)
                mine = t.target if t.rebuild else t.source
                if mine != view.node_id or key in self._tasks:
                    continue
                if len(self._tasks) >= self.config.transfer_concurrency:
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
        view = self.view
        storage, config = self.storage, self.config
        state = view.require_state()
        start, end = partition_keys(p, state.partitions)
        cursor_key = META_XFER + f"{epoch}:{p}:{target}".encode()
        saved = storage.get(Family.META, cursor_key)
        cursor = saved if saved is not None else start
        total = sum(1 for _ in storage.iter_range(Family.OBJECTS, start, end))
        progress = TransferProgress(p, view.node_id, target, 0, total)
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
                            await self.transport.call(target, "merge_many", batch, timeout)
                            break
                        except PeerError as exc:
                            log.warning("transfer of %d to %s paused: %s", p, target, exc)
                            await asyncio.sleep(RETRY_PAUSE_S)
                    progress.keys_done += len(batch)
                    self.keys_sent += len(batch)
                    cursor = batch[-1][0] + b"\x00"
                    storage.write([(Family.META, cursor_key, cursor)])
                    self.commit_log.issued()
                if config.transfer_batch_pause_s:
                    await asyncio.sleep(config.transfer_batch_pause_s)
                if len(batch) < config.transfer_batch_keys:
                    break
            if view.require_state().epoch != epoch:
                return
            storage.write([(Family.META, cursor_key, None)])
            self._mark_done(epoch, p, target, progress.keys_done)
        finally:
            self.progress.pop((p, target), None)

    def _mark_done(self, epoch: int, p: int, target: str, keys: int) -> bool:
        view = self.view
        current = view.require_state()
        if current.epoch != epoch:
            return False
        view.set_state(current.with_done(p, target).settle())
        log.debug("transferred partition %d to %s (%d keys)", p, target, keys)
        if not view.require_state().in_transition():
            log.info("all transfers of plan %d are complete", epoch)
        self.announce()
        return True

    async def _rebuild(self, epoch: int, p: int) -> None:
        """Pull partition p from every surviving replica (a replica was removed)."""
        view = self.view
        me = view.node_id
        state = view.require_state()
        survivors = [
            r for r in state.ring.preference_list(p, state.n) if r not in state.removed and r != me
        ]
        progress = TransferProgress(p, ",".join(survivors), me)
        self.progress[(p, me)] = progress
        try:
            pending = list(survivors)
            waited: set[str] = set()
            while pending:
                if view.require_state().epoch != epoch:
                    return
                peer = pending[0]
                if not view.is_up(peer):
                    if peer not in waited:  # once per replica, not every retry
                        waited.add(peer)
                        log.warning("rebuild of partition %d waits for replica %s", p, peer)
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                try:
                    progress.keys_done += await self.exchange(p, peer)
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

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
