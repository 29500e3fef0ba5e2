"""GroupCommit: when a write counts as durable ("sync": after a covering fsync, shared by
concurrent writers; "wal": at once, fsynced periodically; stop(): a final fsync)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.storage import Family, MemoryStorage
from dynamo_node.store.storage_rocks import RocksStorage


class RecordingStorage(MemoryStorage):
    """Counts writes, records how many writes each fsync covered, can be made slow or
    blocked so that a test can see what happens while an fsync runs."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.writes = 0
        self.covered: list[int] = []  # writes applied when each fsync *started*
        self.delay_s = delay_s
        self.gate: threading.Event | None = None
        self.in_sync = threading.Event()
        self.fail_next = False
        self.attempts = 0  # sync_wal calls, failed ones included

    def write(self, ops):  # type: ignore[no-untyped-def]
        super().write(ops)
        self.writes += 1

    def sync_wal(self) -> None:
        started_with = self.writes
        self.attempts += 1
        self.in_sync.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk on fire")
        super().sync_wal()
        self.covered.append(started_with)


def write(storage: MemoryStorage, gc: GroupCommit, i: int) -> None:
    storage.write([(Family.OBJECTS, f"k{i}".encode(), b"v")])
    gc.issued()


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def spin(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# --- mode "sync" -------------------------------------------------------------------------


async def test_sync_barrier_waits_for_a_covering_fsync() -> None:
    s = RecordingStorage()
    s.gate = threading.Event()
    gc = GroupCommit(s, "sync", 10.0)
    gc.start()
    try:
        write(s, gc, 1)
        barrier = asyncio.create_task(gc.barrier())
        await asyncio.to_thread(s.in_sync.wait, 5)
        await spin()
        assert not barrier.done(), "barrier returned while the fsync was still running"
        assert s.syncs == 0
        s.gate.set()
        await asyncio.wait_for(barrier, 5)
        assert s.syncs >= 1
        assert s.covered[-1] >= 1  # that fsync started after the write was applied
    finally:
        s.gate.set()
        await gc.stop()


async def test_sync_write_during_an_fsync_needs_the_next_one() -> None:
    """A write applied while an fsync runs is not covered by it."""
    s = RecordingStorage()
    s.gate = threading.Event()
    gc = GroupCommit(s, "sync", 10.0)
    gc.start()
    try:
        write(s, gc, 1)
        first = asyncio.create_task(gc.barrier())
        await asyncio.to_thread(s.in_sync.wait, 5)  # fsync #1 started, covers write 1
        write(s, gc, 2)
        second = asyncio.create_task(gc.barrier())
        await spin()
        s.gate.set()
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(second, 5)
        assert s.syncs >= 2
        assert s.covered[0] == 1
        assert max(s.covered) >= 2
    finally:
        s.gate.set()
        await gc.stop()


async def test_sync_barrier_without_writes_returns_at_once() -> None:
    s = RecordingStorage()
    gc = GroupCommit(s, "sync", 10.0)
    gc.start()
    try:
        await asyncio.wait_for(gc.barrier(), 1)
        assert s.syncs == 0
        write(s, gc, 1)
        await asyncio.wait_for(gc.barrier(), 5)
        n = s.syncs
        await asyncio.wait_for(gc.barrier(), 1)  # already covered: no new fsync
        await spin()
        assert s.syncs == n == gc.fsyncs
    finally:
        await gc.stop()


async def test_sync_group_commit_shares_fsyncs_between_concurrent_writers() -> None:
    s = RecordingStorage()
    gc = GroupCommit(s, "sync", 10.0)
    gc.start()

    async def writer(i: int) -> None:
        write(s, gc, i)
        await gc.barrier()

    try:
        await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(100))), 10)
        assert s.writes == 100
        assert 1 <= s.syncs <= 10, s.syncs
        assert gc.fsyncs == s.syncs
        assert max(s.covered) == 100
    finally:
        await gc.stop()


async def test_sync_group_commit_with_slow_fsyncs_and_staggered_writers() -> None:
    """Writers arriving over ~100 ms while each fsync takes 10 ms: every barrier waits for
    a covering fsync, and writers still share them."""
    s = RecordingStorage(delay_s=0.01)
    gc = GroupCommit(s, "sync", 10.0)
    gc.start()
    released_after: list[tuple[int, int]] = []  # (writes before my write, syncs covering)

    async def writer(i: int) -> None:
        await asyncio.sleep(i * 0.001)
        write(s, gc, i)
        mine = s.writes
        await gc.barrier()
        # some completed fsync started after my write was applied
        assert any(c >= mine for c in s.covered), (mine, s.covered)
        released_after.append((mine, len(s.covered)))

    try:
        await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(100))), 15)
        assert len(released_after) == 100
        assert s.syncs < 50, s.syncs
    finally:
        await gc.stop()


async def test_a_failed_fsync_is_fatal_and_never_retried() -> None:
    s = RecordingStorage()
    s.fail_next = True
    fatal: list[BaseException] = []
    gc = GroupCommit(s, "sync", 10.0, on_fatal=fatal.append)
    gc.start()
    try:
        write(s, gc, 1)
        with pytest.raises(OSError):
            await asyncio.wait_for(gc.barrier(), 5)
        assert len(fatal) == 1 and isinstance(fatal[0], OSError)
        # nothing written after it is acknowledged, and no fsync is tried again (a retry
        # could "succeed" after the kernel dropped the dirty pages)
        write(s, gc, 2)
        with pytest.raises(OSError):
            await asyncio.wait_for(gc.barrier(), 5)
        assert s.attempts == 1 and not s.covered
    finally:
        await gc.stop()
    assert s.attempts == 1


def test_the_default_on_a_failed_fsync_ends_the_process() -> None:
    import subprocess
    import sys

    from dynamo_node.store.durability import EXIT_FSYNC_FAILED

    code = (
        "from dynamo_node.store.durability import exit_on_fsync_failure\n"
        "exit_on_fsync_failure(OSError(5, 'EIO'))\n"
        "print('still running')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == EXIT_FSYNC_FAILED
    assert "still running" not in done.stdout


# --- mode "wal" ---------------------------------------------------------------------------


async def test_wal_barrier_returns_immediately() -> None:
    s = RecordingStorage()
    s.gate = threading.Event()  # any fsync would block: the barrier must not need one
    gc = GroupCommit(s, "wal", 10.0)
    gc.start()
    try:
        for i in range(10):
            write(s, gc, i)
            await asyncio.wait_for(gc.barrier(), 0.5)
        assert s.syncs == 0
    finally:
        s.gate.set()
        await gc.stop()


async def test_wal_periodic_fsync_within_about_the_interval() -> None:
    s = RecordingStorage()
    interval = 0.05
    gc = GroupCommit(s, "wal", interval)
    gc.start()
    try:
        write(s, gc, 1)
        t0 = time.monotonic()
        await wait_until(lambda: s.syncs >= 1, timeout=2.0)
        assert time.monotonic() - t0 < 1.0  # ~interval, generous for a loaded machine
        assert s.covered == [1]

        # idle: nothing issued, so no more fsyncs
        await asyncio.sleep(interval * 4)
        assert s.syncs == 1

        write(s, gc, 2)
        write(s, gc, 3)
        await wait_until(lambda: s.syncs >= 2, timeout=2.0)
        assert s.covered[-1] == 3
        assert gc.fsyncs == s.syncs
    finally:
        await gc.stop()


async def test_wal_stop_performs_a_final_fsync() -> None:
    s = RecordingStorage()
    gc = GroupCommit(s, "wal", 60.0)
    gc.start()
    await spin()
    write(s, gc, 1)
    write(s, gc, 2)
    assert s.syncs == 0
    await asyncio.wait_for(gc.stop(), 5)
    assert s.syncs == 1 and s.covered == [2]


async def test_stop_without_pending_writes_does_not_fsync() -> None:
    for mode in ("sync", "wal"):
        s = RecordingStorage()
        gc = GroupCommit(s, mode, 60.0)
        gc.start()
        await spin()
        await asyncio.wait_for(gc.stop(), 5)
        assert s.syncs == 0, mode


async def test_sync_stop_syncs_and_releases_pending_barriers() -> None:
    s = RecordingStorage()
    gc = GroupCommit(s, "sync", 60.0)
    gc.start()
    write(s, gc, 1)
    barrier = asyncio.create_task(gc.barrier())
    await asyncio.sleep(0)
    await asyncio.wait_for(gc.stop(), 5)
    await asyncio.wait_for(barrier, 5)
    assert s.syncs >= 1 and max(s.covered) == 1


# --- RocksDB ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "wal"])
async def test_rocks_group_commit_smoke(tmp_path: Path, mode: str) -> None:
    path = str(tmp_path / "db")
    s = RocksStorage(path)
    gc = GroupCommit(s, mode, 0.02)
    gc.start()

    async def writer(i: int) -> None:
        s.write([(Family.OBJECTS, f"k{i:03d}".encode(), b"v"), (Family.META, b"last", b"x")])
        gc.issued()
        await gc.barrier()

    try:
        await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(50))), 10)
        if mode == "sync":
            assert 1 <= gc.fsyncs < 50
        else:
            await wait_until(lambda: gc.fsyncs >= 1, timeout=3.0)
    finally:
        await gc.stop()
        s.close()
    s = RocksStorage(path)
    try:
        assert len(s.scan(Family.OBJECTS)) == 50
        assert s.get(Family.META, b"last") == b"x"
    finally:
        s.close()
