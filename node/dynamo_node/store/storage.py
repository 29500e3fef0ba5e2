"""The storage interface of a node and its in-memory twin.

`Storage` is a small synchronous key-value interface over named column families. Calls
are cheap (microseconds on RocksDB) and are made on the event loop, which also makes a
read-modify-write of one object atomic with respect to other requests. The only slow
operation, `sync_wal` (fsync), is called from a thread by `durability.GroupCommit`.

Object keys are `key_hash (8 bytes, big-endian) + key (UTF-8)` so that every partition
(a range of hashes, whatever Q is) is one contiguous range of the keyspace.

Implementations: `MemoryStorage` (tests, and the contract suite's reference) and
`storage_rocks.RocksStorage`. tests/node/store/test_storage.py runs one contract over both.
"""

from __future__ import annotations

import bisect
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from dynamo_node.core.errors import Unavailable
from dynamo_node.core.ring import key_hash, partition_range


class Family(enum.Enum):
    OBJECTS = "default"
    HINTS = "hints"
    META = "meta"


Op = tuple[Family, bytes, bytes | None]  # value None = delete


def storage_key(key: str) -> bytes:
    raw = key.encode()
    return key_hash(raw).to_bytes(8, "big") + raw


def skey_hash(skey: bytes) -> int:
    """The key hash a storage key starts with (no need to hash the key again)."""
    return int.from_bytes(skey[:8], "big")


def user_key(skey: bytes) -> str:
    return skey[8:].decode()


def hash_prefix(h: int) -> bytes:
    return h.to_bytes(8, "big")


def partition_keys(p: int, partitions: int) -> tuple[bytes, bytes | None]:
    """The storage-key range [start, end) holding partition p."""
    lo, hi = partition_range(p, partitions)
    return hash_prefix(lo), (hash_prefix(hi) if hi < 1 << 64 else None)


class Storage(Protocol):
    def get(self, family: Family, key: bytes) -> bytes | None: ...

    def write(self, ops: Sequence[Op]) -> None:
        """Apply every op atomically (all or none), in the write-ahead log."""

    def scan(
        self, family: Family, start: bytes = b"", end: bytes | None = None, limit: int = 0
    ) -> list[tuple[bytes, bytes]]:
        """Items with start <= key < end in key order; at most `limit` (0 = all)."""

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """A lazy scan, for bulk work (Merkle builds, transfers). Consume it fully or
        close it before `close()`."""

    def delete_range(self, family: Family, start: bytes, end: bytes | None) -> None:
        """Delete every key with start <= key < end (end None: to the last key) at once,
        after the writes accepted before it: one range tombstone on RocksDB, whatever
        the number of keys (no scan, no key-by-key delete), in the write-ahead log like
        a write; the space is reclaimed by a compaction of the range in the background.
        A repeated call over an emptied range is cheap."""

    def sync_wal(self) -> None:
        """Make every applied write durable (fsync); grouped writes not yet applied are
        not covered: `flush()` them first. Thread-safe; blocking."""

    def approximate_size(self) -> int: ...

    def close(self) -> None: ...

    # write grouping (see RocksStorage.group_writes); a storage may apply writes at once
    #: called after each grouped apply with None, or with the error that failed it
    flush_hooks: list[Callable[[BaseException | None], None]]

    def group_writes(self, schedule: Callable[[Callable[[], None]], object]) -> None: ...

    @property
    def failure(self) -> BaseException | None:
        """The error that failed a write (disk full, I/O error), until `recover`."""

    def recover(self) -> None:
        """Reopen after a failure (the write-ahead log is replayed: every acknowledged
        write is back; writes that failed were never acknowledged and are gone);
        raises if the storage still cannot write."""

    def has_pending(self) -> bool:
        """Writes accepted (and readable) but not yet applied to the write-ahead log."""

    def flush(self) -> None:
        """Apply the grouped writes now (on the thread that writes)."""


class MemoryStorage:
    """A sorted in-memory twin of RocksStorage (same semantics, no durability)."""

    def __init__(self) -> None:
        self._data: dict[Family, dict[bytes, bytes]] = {f: {} for f in Family}
        self._keys: dict[Family, list[bytes]] = {f: [] for f in Family}
        self._lock = threading.Lock()
        self._closed = False
        self.syncs = 0
        self.flush_hooks: list[Callable[[BaseException | None], None]] = []
        #: set by tests to make the storage fail like a full disk
        self.failed: BaseException | None = None

    def group_writes(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Writes apply at once here: nothing to group."""

    @property
    def failure(self) -> BaseException | None:
        return self.failed

    def recover(self) -> None:
        self.failed = None

    def has_pending(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    def _check(self) -> None:
        if self._closed:
            raise Unavailable("storage is closed")
        if self.failed is not None:
            raise Unavailable(f"storage failed: {self.failed}")

    def get(self, family: Family, key: bytes) -> bytes | None:
        self._check()
        return self._data[family].get(key)

    def write(self, ops: Sequence[Op]) -> None:
        self._check()
        for family, key, value in ops:  # validate everything first: all or none
            if not isinstance(family, Family) or not isinstance(key, bytes):
                raise TypeError("ops are (Family, bytes, bytes | None)")
            if value is not None and not isinstance(value, bytes):
                raise TypeError("values must be bytes or None")
        with self._lock:
            for family, key, value in ops:
                data, keys = self._data[family], self._keys[family]
                if value is None:
                    if data.pop(key, None) is not None:
                        keys.pop(bisect.bisect_left(keys, key))
                else:
                    if key not in data:
                        bisect.insort(keys, key)
                    data[key] = bytes(value)

    def scan(
        self, family: Family, start: bytes = b"", end: bytes | None = None, limit: int = 0
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for item in self.iter_range(family, start, end):
            out.append(item)
            if limit and len(out) >= limit:
                break
        return out

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        with self._lock:
            keys = self._keys[family]
            lo = bisect.bisect_left(keys, start)
            hi = len(keys) if end is None else bisect.bisect_left(keys, end)
            snapshot = [(k, self._data[family][k]) for k in keys[lo:hi]]
        yield from snapshot

    def delete_range(self, family: Family, start: bytes, end: bytes | None) -> None:
        self._check()
        if not isinstance(family, Family):
            raise TypeError("family must be a Family")
        with self._lock:
            data, keys = self._data[family], self._keys[family]
            lo = bisect.bisect_left(keys, start)
            hi = len(keys) if end is None else max(lo, bisect.bisect_left(keys, end))
            for key in keys[lo:hi]:
                del data[key]
            del keys[lo:hi]

    def sync_wal(self) -> None:
        self._check()
        self.syncs += 1

    def approximate_size(self) -> int:
        return sum(len(k) + len(v) for d in self._data.values() for k, v in d.items())

    def close(self) -> None:
        self._closed = True
