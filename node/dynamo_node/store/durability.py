"""When a write counts as durable: group commit of the write-ahead log.

Writes are applied to RocksDB on the event loop (visible at once, WAL written, no fsync).
`GroupCommit.barrier()` then decides when the write may be acknowledged:

- mode "sync": after an fsync of the WAL that covers it. One background task runs the
  fsyncs in a thread; every write issued before an fsync starts is covered by it, so
  many concurrent writes share one fsync (group commit) and the loop never blocks.
- mode "wal": once the write is in the WAL (which survives a process crash such as
  kill -9): at the end of the loop iteration that made it, when the storage applies the
  iteration's writes as one group (`Storage.group_writes`). The WAL is fsynced every
  `interval` seconds, so a machine crash loses at most that window on this replica
  (Cassandra's "periodic" commitlog mode).

A failed fsync is never retried (PostgreSQL's "fsyncgate": after a failed fsync the
kernel may have dropped the dirty pages and a retry can succeed without them on disk).
The waiters fail, no further write is acknowledged, and `on_fatal` is called: in a
node it ends the process with EXIT_FSYNC_FAILED, and RocksDB recovers from its WAL on
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from dynamo_node.store.storage import Storage

log = logging.getLogger("dynamo.durability")

#: the exit status of a node whose WAL fsync failed (EX_IOERR)
EXIT_FSYNC_FAILED = 74


def exit_on_fsync_failure(exc: BaseException) -> None:
    """End the process now: nothing it holds in memory can be trusted to be on disk."""
    log.critical("WAL fsync failed (%s): exiting; the WAL is replayed on restart", exc)
    logging.shutdown()
    os._exit(EXIT_FSYNC_FAILED)


class GroupCommit:
    def __init__(
        self,
        storage: Storage,
        mode: str,
        interval_s: float,
        on_fatal: Callable[[BaseException], None] = exit_on_fsync_failure,
    ) -> None:
        self._storage = storage
        self._on_fatal = on_fatal
        #: the fsync error once one failed: nothing is acknowledged after it
        self.failed: BaseException | None = None
        self.mode = mode
        self._interval = interval_s
        self._issued = 0
        self._synced = 0
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: "wal" mode: barriers waiting for the grouped writes to be applied
        self._applied: list[asyncio.Future[None]] = []
        storage.flush_hooks.append(self._on_apply)
        self.fsyncs = 0

    def start(self) -> None:
        # looked up once: get_running_loop() costs a getpid() syscall per call on 3.11
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def issued(self) -> None:
        """Record that a write was applied (call right after Storage.write)."""
        self._issued += 1
        if self.mode == "sync":
            self._wake.set()

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _on_apply(self, error: BaseException | None) -> None:
        waiters, self._applied = self._applied, []
        for fut in waiters:
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    async def barrier(self) -> None:
        """Return when every write issued so far is as durable as the mode promises."""
        fut = self.barrier_future()
        if fut is not None:
            await fut

    def barrier_future(self) -> asyncio.Future[None] | None:
        """`barrier` for callers that wait on several things at once: None when every
        write issued so far is durable already, else a future resolved when it is (or
        failed with the storage's error)."""
        if self.mode != "sync":
            if not self._storage.has_pending():
                return None
            fut: asyncio.Future[None] = self._loop_now().create_future()
            self._applied.append(fut)
            return fut
        target = self._issued
        if self._synced >= target:
            return None
        fut = self._loop_now().create_future()
        if self.failed is not None:
            fut.set_exception(self.failed)
            return fut
        self._waiters.append((target, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        while True:
            if self.mode == "sync":
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._issued == self._synced:
                continue
            target = self._issued
            self._storage.flush()  # the grouped writes into the WAL, here on the loop
            refused = self._storage.failure
            if refused is not None:
                # a write already failed (disk full): the WAL writer is in error and
                # accepts nothing, so there is nothing new to sync. Waiters fail with
                # that error; the storage recovers (or not) on its own, not by fsync.
                self._fail(refused)
                continue
            try:
                await asyncio.to_thread(self._storage.sync_wal)
            except Exception as exc:
                log.exception("WAL fsync failed")
                self.failed = exc
                self._fail(exc)
                self._on_fatal(exc)
                return  # never retried
            self.fsyncs += 1
            self._synced = target
            self._release()

    def _release(self) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if target <= self._synced:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still
        if still:
            self._wake.set()

    def _fail(self, exc: BaseException) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters = []

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._storage.flush()
        if self._issued != self._synced and self.failed is None:
            await asyncio.to_thread(self._storage.sync_wal)
            self._synced = self._issued
        self._release()
