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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .storage import Storage

log = logging.getLogger("dynamo.durability")


class GroupCommit:
    def __init__(self, storage: Storage, mode: str, interval_s: float) -> None:
        self._storage = storage
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
            try:
                await asyncio.to_thread(self._storage.sync_wal)
            except Exception as exc:
                log.exception("WAL fsync failed")
                self._fail(exc)
                continue
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

    def _fail(self, exc: Exception) -> None:
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
        if self._issued != self._synced:
            await asyncio.to_thread(self._storage.sync_wal)
            self._synced = self._issued
        self._release()
