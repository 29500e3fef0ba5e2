"""RocksDB storage (rocksdict), one directory per node.

Column families: `default` (objects), `hints` (hinted handoff, durable), `meta` (node id,
ring, counters). Writes go through one WriteBatch (atomic) into the WAL without fsync;
durability is decided by `durability.GroupCommit`, which calls `sync_wal` (FlushWAL with
sync) off the event loop and acknowledges a group of writes with one fsync.

Write grouping (`group_writes`, what a running node uses): the writes of one event-loop
iteration are applied together at its end, one WriteBatch and one WAL append (a system
call) for all of them, where a write each cost one append. They are readable at once
(an overlay in front of the reads); whoever acknowledges a write waits for its group to
be applied (`GroupCommit.barrier`, and the node-to-node replies via `flush()`).

Row cache (`row_cache_bytes`, objects only): the stored bytes of recently written or
read keys, in insertion order, oldest evicted first, updated by every write. Profiles
of a 3-node cluster on one core showed RocksDB's memtable skiplist search at ~20% of a
GET (cache misses across processes); a hit is one dict lookup.

Damaged data (docs/operations.md "Damaged data"): RocksDB verifies a checksum on every
block it reads. A damaged WAL record, MANIFEST or table index/filter block fails the
open (`main` then refuses to start, or moves the directory aside with
`--on-corruption=replace`); a damaged table data block is found only when read (a get,
a scan, a compaction): the storage is then failed for good (`StorageCorrupt`, never a
"not found" nor a truncated scan), counted in `corruptions`, and recorded in
CORRUPTION_MARKER inside the directory, so the next start refuses it as well. Checking
every block at open would mean reading every table file (about the cost of a full scan;
docs/operations.md has the numbers), so it is not done.

Recovery without space (`avoid_flush_during_recovery`): RocksDB's default writes the
replayed WAL out as a table at open, which needs about the WAL's size in free space: a
node stopped on a full disk could not start again. Here the WAL is replayed into the
memtable only and kept until a normal flush. rocksdict has no setter for that option,
so it comes from an OPTIONS file (RocksDB's own format) loaded with `load_latest`, with
`allow_fallocate=false`: a new WAL was otherwise preallocated (1.1 x the write buffer)
and took the last free blocks before the open could write its MANIFEST. An open still
writes a few small files (a MANIFEST, an OPTIONS file, ~32 KiB measured), so a ballast
file (BALLAST, 1 MiB) is kept in the directory and released at a start on a full disk.

Bounded WAL (`MAX_TOTAL_WAL_BYTES`): a log file is deleted only once every column family
with writes in it has flushed them. `meta` and `hints` take few writes, so their
memtables filled slowly and pinned every log written since their last flush: a node
that never restarted kept 1.2 GB of old WAL in 20 files for 1M keys of 1 KiB. Past the
bound RocksDB flushes the column families holding the oldest log (`max_total_wal_size`),
so the WAL stays near the bound. Every write still goes to the WAL and is fsynced by
`GroupCommit` as before; only old, already flushed logs go away sooner. The same bound
limits what `avoid_flush_during_recovery` keeps: the logs replayed at open stay only
until the total passes the bound.

Dropping a range (`delete_range`, the janitor's way of discarding partitions given
away): one range tombstone in the WAL and the memtable, O(1) whatever the number of
keys, where a delete per key left as many tombstones for every later scan to step over.
A compaction of the dropped ranges then reclaims the space on a thread of its own
(`_compactor`; RocksDB releases the GIL); ranges dropped within `COMPACT_SETTLE_S` are
compacted together, as one span (a range compaction flushes the memtable and rewrites
the level-0 and level-1 tables it overlaps, which after random writes is all of them:
one compaction per range would rewrite them once per partition). Closing cancels a
running compaction (RocksDB's `CancelAllBackgroundWork`), so a stop never waits for it.

rocksdict notes: column-family handles and iterators keep the DB open, so `close()`
drops every handle first; iterators are wrapped so that none outlives `close()`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    CompactOptions,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from dynamo_node.core.errors import StorageCorrupt, Unavailable
from dynamo_node.store.storage import Family, Op

log = logging.getLogger("dynamo.storage")


_MISSING = object()
BLOCK_CACHE_BYTES = 64 * 1024 * 1024
#: rough per-entry cost of the row cache beyond key and value (dict slot, bytes headers)
ROW_OVERHEAD = 120
BLOOM_BITS_PER_KEY = 10
#: share of the memtable's size given to its bloom filter
MEMTABLE_BLOOM_RATIO = 0.05
#: written into the data directory when RocksDB reports damaged data at run time
CORRUPTION_MARKER = "DYNAMO-CORRUPTION"
#: space kept in the data directory for a start on a full disk (an open needs ~32 KiB)
BALLAST = "DYNAMO-BALLAST"
BALLAST_BYTES = 1024 * 1024
#: bound on the total size of the write-ahead log files (see the module docstring):
#: twice the objects' write buffer (RocksDB's default, 64 MiB), so the objects family
#: flushes on its own as before and only the families with few writes (meta, hints) are
#: flushed early; a restart replays at most about this much (a second or two)
MAX_TOTAL_WAL_BYTES = 128 * 1024 * 1024
#: a range delete forgets the range's rows from a row cache up to this many rows, and
#: clears a larger one
ROW_FILTER_MAX = 4096
#: ranges dropped within this long are compacted together (one compaction)
COMPACT_SETTLE_S = 0.5
#: an end above every key of the objects family (8-byte hash + UTF-8, which has no 0xff
#: byte), for a range to the end of the keyspace; keys past it are deleted one by one
_RANGE_END = b"\xff" * 16
#: DB options rocksdict has no setter for (RocksDB's OPTIONS file format)
_OPTIONS_FILE = """[Version]
  rocksdb_version=9.0.0
  options_file_version=1.1
[DBOptions]
  avoid_flush_during_recovery=true
  allow_fallocate=false
[CFOptions "default"]
[TableOptions/BlockBasedTable "default"]
"""


def is_corruption(exc: BaseException) -> bool:
    """Whether a RocksDB error is a Corruption status (a checksum or format mismatch)."""
    return isinstance(exc, StorageCorrupt) or "Corruption" in str(exc)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def release_ballast(path: str) -> bool:
    """Delete the ballast if the filesystem has less free space than it holds."""
    ballast = os.path.join(path, BALLAST)
    if not os.path.exists(ballast) or free_bytes(path) >= BALLAST_BYTES:
        return False
    os.unlink(ballast)
    log.warning(
        "disk full: released the %d KiB ballast in %s so that RocksDB can open; free "
        "space before writes fail again (docs/operations.md, Disk full)",
        BALLAST_BYTES // 1024,
        path,
    )
    return True


def keep_ballast(path: str) -> None:
    """(Re)create the ballast where there is room for it (and plenty more)."""
    ballast = os.path.join(path, BALLAST)
    if os.path.exists(ballast) or free_bytes(path) < 16 * BALLAST_BYTES:
        return
    try:
        with open(ballast + ".tmp", "wb") as f:
            f.write(b"\0" * BALLAST_BYTES)
            f.flush()
            os.fsync(f.fileno())
        os.replace(ballast + ".tmp", ballast)
    except OSError as exc:
        log.warning("could not create the ballast %s: %s", ballast, exc)
        with contextlib.suppress(OSError):
            os.unlink(ballast + ".tmp")


def _base_options() -> Options:
    """Options with `avoid_flush_during_recovery` (see the module docstring)."""
    try:
        with tempfile.TemporaryDirectory(prefix="dynamo-rocks-options-") as tmp:
            with open(os.path.join(tmp, "OPTIONS-000001"), "w", encoding="ascii") as f:
                f.write(_OPTIONS_FILE)
            opts, _ = Options.load_latest(tmp)
            return opts  # type: ignore[no-any-return]
    except Exception as exc:  # e.g. no space for a temporary file
        log.warning("recovery will flush the WAL (needs free space): %s", exc)
        return Options(raw_mode=True)


def direct_io_works(path: str) -> bool:
    """Whether files under `path` can be opened with O_DIRECT (RocksDB's wiki: check
    the filesystem before enabling it; tmpfs before Linux 6.6 refuses it, EINVAL)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = os.path.join(path, ".direct-io-probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | flag, 0o600)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _options(
    direct_io: bool = False, max_open_files: int = -1, max_total_wal: int = MAX_TOTAL_WAL_BYTES
) -> Options:
    opts = _base_options()
    # past this total, the families whose memtables pin the oldest log are flushed
    opts.set_max_total_wal_size(max_total_wal)
    # -1: no bound; else RocksDB closes the least used tables beyond it (fdbudget.py)
    opts.set_max_open_files(max_open_files)
    # a damaged WAL is never skipped silently: only an incomplete last record (a write
    # cut short by a crash, never acknowledged) is tolerated; corruption anywhere else
    # fails the open, and the node refuses to start (RocksDB's default, point-in-time
    # recovery, would stop replaying there and drop every later write)
    opts.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    opts.set_paranoid_checks(True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_keep_log_file_num(3)
    # point lookups dominate (every write reads the object first): a bloom filter per
    # table answers "absent" without reading blocks; a shared block cache keeps hot ones
    table = BlockBasedOptions()
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    # and a bloom filter over the memtable's keys: a write of a new key (its read misses)
    # skips the skiplist search
    opts.set_memtable_whole_key_filtering(True)
    opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
    # no compression where data is young and rewritten soon (memtable flushes to L0 and
    # the L0->L1 compactions run on the node's own core: snappy there cost ~7% of it
    # under sustained writes), LZ4 below (RocksDB's tuning guide does the same)
    none, lz4 = DBCompressionType.none(), DBCompressionType.lz4()
    opts.set_compression_per_level([none, none, lz4, lz4, lz4, lz4, lz4])
    # flushes and compactions write (and compactions read) their tables with O_DIRECT:
    # through the page cache every byte was copied once more in the kernel and left
    # dirty pages for writeback, on the node's own core; reads still use the page
    # cache. Only where the filesystem takes O_DIRECT (tmpfs before Linux 6.6 does not).
    opts.set_use_direct_io_for_flush_and_compaction(direct_io)
    return opts


def salvage_meta(path: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
    """What can still be read of `keys` in the META family of a damaged directory
    (read-only, every damaged WAL record skipped; nothing is written). Empty if even
    that fails."""
    opts = Options(raw_mode=True)
    opts.set_wal_recovery_mode(DBRecoveryMode.skip_any_corrupted_record())
    found: dict[bytes, bytes] = {}
    try:
        db: Any = Rdict(
            path,
            options=opts,
            column_families={
                f.value: Options(raw_mode=True) for f in Family if f is not Family.OBJECTS
            },
            access_type=AccessType.read_only(),
        )
    except Exception as exc:
        log.warning("nothing salvageable in %s: %s", path, exc)
        return found
    try:
        meta = db.get_column_family(Family.META.value)
        for key in keys:
            try:
                value = meta.get(key)
            except Exception as exc:
                log.warning("%r unreadable in %s: %s", key, path, exc)
                continue
            if value is not None:
                found[key] = value
        del meta
    finally:
        db.close()
    return found


class RocksStorage:
    def __init__(
        self,
        path: str,
        row_cache_bytes: int = 0,
        max_open_files: int = -1,
        max_total_wal_bytes: int = MAX_TOTAL_WAL_BYTES,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.max_total_wal_bytes = max_total_wal_bytes
        marker = os.path.join(path, CORRUPTION_MARKER)
        if os.path.exists(marker):
            with open(marker, encoding="utf-8", errors="replace") as f:
                recorded = f.read().strip()
            raise StorageCorrupt(f"Corruption recorded by an earlier run in {marker}: {recorded}")
        #: Corruption errors RocksDB reported to this process
        self.corruptions = 0
        self.max_open_files = max_open_files
        #: flushes and compactions bypass the page cache (where the filesystem allows)
        self.direct_io = direct_io_works(path)
        release_ballast(path)
        self._open()
        keep_ballast(path)
        self._write_opts = WriteOptions()
        self._write_opts.sync = False
        self._closed = False
        self._sync_lock = threading.Lock()
        self._iterators: weakref.WeakSet[_Iter] = weakref.WeakSet()
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._pending: list[Op] = []
        self._overlay: dict[tuple[Family, bytes], bytes | None] = {}
        self._failed: BaseException | None = None
        self.flush_hooks: list[Callable[[BaseException | None], None]] = []
        self._rows: OrderedDict[bytes, bytes] = OrderedDict()
        self._rows_bytes = 0
        self._rows_limit = row_cache_bytes
        self.row_hits = 0
        self.row_misses = 0
        # compactions of dropped ranges (delete_range), on a thread of their own
        self._compact_lock = threading.Lock()
        self._compactor: ThreadPoolExecutor | None = None
        self._compact_queue: dict[Family, list[tuple[bytes, bytes | None]]] = {}
        self._compact_stop = threading.Event()
        self._compacting = False  # a job is queued or running
        self._in_compaction = False  # RocksDB is compacting for it
        self._compact_opts = CompactOptions()
        self._compact_opts.set_exclusive_manual_compaction(False)  # others go on meanwhile
        #: compactions of dropped ranges run to completion
        self.range_compactions = 0

    def _open(self) -> None:
        self._db: Any = Rdict(
            self.path,
            options=_options(self.direct_io, self.max_open_files, self.max_total_wal_bytes),
            column_families={
                f.value: Options(raw_mode=True) for f in Family if f is not Family.OBJECTS
            },
        )
        self._cfs: dict[Family, Any] = {Family.OBJECTS: self._db}
        self._handles: dict[Family, Any] = {}
        for f in Family:
            if f is not Family.OBJECTS:
                self._cfs[f] = self._db.get_column_family(f.value)
                self._handles[f] = self._db.get_column_family_handle(f.value)

    @property
    def failure(self) -> BaseException | None:
        return self._failed

    def _damaged(self, exc: BaseException) -> BaseException:
        """The error to raise for `exc` from RocksDB: a Corruption fails the storage for
        good (counted, logged with the file RocksDB names, recorded in the directory)."""
        if not is_corruption(exc):
            return exc
        self.corruptions += 1
        if isinstance(self._failed, StorageCorrupt):
            return self._failed
        self._failed = StorageCorrupt(f"damaged data in {self.path}: {exc}")
        log.critical(
            "RocksDB reports damaged data: %s. Storage failed (reads and writes refused; "
            "the other replicas serve). Recovery: stop the node and restore its volume "
            "from a snapshot, or restart it with --on-corruption=replace (the directory "
            "is moved aside and the node refills from its peers)",
            exc,
        )
        marker = os.path.join(self.path, CORRUPTION_MARKER)
        try:
            with open(marker, "w", encoding="utf-8") as f:
                stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
                f.write(f"{stamp} {exc}\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.error("could not record the damage in %s: %s", marker, err)
        return self._failed

    def recover(self) -> None:
        """Close and reopen RocksDB (it replays its WAL), then prove a write and a WAL
        sync work; the failed writes were never acknowledged, so what they left in
        memory (the overlay, the row cache) is dropped."""
        if self._failed is None or self._closed or isinstance(self._failed, StorageCorrupt):
            return  # damaged data stays damaged: only a replacement or a restore helps
        self._stop_compactions()
        with self._sync_lock:
            for it in list(self._iterators):
                it.close()
            self._pending = []
            self._overlay.clear()
            self._rows.clear()
            self._rows_bytes = 0
            self._handles.clear()
            self._cfs.clear()
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
            self._open()
            probe = WriteBatch(raw_mode=True)
            probe.put(b"storage-probe", b"1", self._handles[Family.META])
            self._db.write(probe, self._write_opts)
            self._db.flush_wal(True)
        keep_ballast(self.path)
        log.warning("storage recovered after %s: accepting writes again", self._failed)
        self._failed = None

    @property
    def row_cache_limit(self) -> int:
        return self._rows_limit

    def _remember(self, key: bytes, value: bytes | None) -> None:
        """Keep (or forget) an object's stored bytes in the row cache."""
        rows = self._rows
        old = rows.pop(key, None)  # a rewritten key moves to the back
        if old is not None:
            self._rows_bytes -= len(key) + len(old) + ROW_OVERHEAD
        if value is None or not self._rows_limit:
            return
        size = len(key) + len(value) + ROW_OVERHEAD
        if size > self._rows_limit // 64:
            return  # large values would evict many small ones
        rows[key] = value
        self._rows_bytes += size
        while self._rows_bytes > self._rows_limit:
            # OrderedDict: O(1) from the front (a dict's first live entry is found by
            # walking past every entry deleted before it)
            oldest, value = rows.popitem(last=False)
            self._rows_bytes -= len(oldest) + len(value) + ROW_OVERHEAD

    def _check(self) -> None:
        if self._closed:
            raise Unavailable("storage is closed")
        if isinstance(self._failed, StorageCorrupt):
            raise StorageCorrupt(str(self._failed))
        if self._failed is not None:
            raise Unavailable(f"storage failed: {self._failed}")

    def get(self, family: Family, key: bytes) -> bytes | None:
        self._check()
        if self._overlay:
            hit = self._overlay.get((family, key), _MISSING)
            if hit is not _MISSING:
                return hit  # type: ignore[return-value]
        if family is Family.OBJECTS and self._rows_limit:
            row = self._rows.get(key)
            if row is not None:
                self.row_hits += 1
                return row
            self.row_misses += 1
            try:
                value: bytes | None = self._db.get(key)
            except Exception as exc:
                raise self._damaged(exc) from exc
            if value is not None:
                self._remember(key, value)
            return value
        try:
            value = self._cfs[family].get(key)
        except Exception as exc:
            raise self._damaged(exc) from exc
        return value

    # --- write grouping ------------------------------------------------------------------
    def group_writes(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """From now on apply writes once per `schedule` (the loop's call_soon)."""
        self._schedule = schedule

    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        ops = self._pending
        if not ops:
            return
        self._pending = []
        try:
            self._apply(ops)
        except Exception as exc:
            # RocksDB refused a write (disk full, I/O error): nothing more is accepted
            log.exception("applying %d grouped writes failed; storage unavailable", len(ops))
            self._failed = self._damaged(exc)
            for hook in self.flush_hooks:
                hook(exc)
            return
        self._overlay.clear()
        for hook in self.flush_hooks:
            hook(None)

    def write(self, ops: Sequence[Op]) -> None:
        self._check()
        if self._schedule is None:
            self._apply(ops)
            self._remember_ops(ops)
            return
        for family, key, value in ops:  # all or none: a bad op must not poison a group
            if not isinstance(family, Family) or not isinstance(key, bytes):
                raise TypeError("ops are (Family, bytes, bytes | None)")
            if value is not None and not isinstance(value, bytes):
                raise TypeError("values must be bytes or None")
        if not self._pending:
            self._schedule(self.flush)
        for family, key, value in ops:
            self._overlay[(family, key)] = value
        self._pending.extend(ops)
        self._remember_ops(ops)

    def _remember_ops(self, ops: Sequence[Op]) -> None:
        if self._rows_limit:
            for family, key, value in ops:
                if family is Family.OBJECTS:
                    self._remember(key, value)

    def _apply(self, ops: Sequence[Op]) -> None:
        if len(ops) == 1 and ops[0][0] is Family.OBJECTS:
            _, key, value = ops[0]
            if value is None:
                self._db.delete(key, self._write_opts)
            else:
                self._db.put(key, value, self._write_opts)
            return
        batch = WriteBatch(raw_mode=True)
        for family, key, value in ops:
            if not isinstance(family, Family):
                raise TypeError("ops are (Family, bytes, bytes | None)")
            handle = self._handles.get(family)
            if value is None:
                batch.delete(key, handle) if handle is not None else batch.delete(key)
            else:
                batch.put(key, value, handle) if handle is not None else batch.put(key, value)
        self._db.write(batch, self._write_opts)

    def scan(
        self, family: Family, start: bytes = b"", end: bytes | None = None, limit: int = 0
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        it = self.iter_range(family, start, end)  # applies grouped writes first
        try:
            for item in it:
                out.append(item)
                if limit and len(out) >= limit:
                    break
        finally:
            it.close()  # type: ignore[attr-defined]
        return out

    def iter_range(
        self, family: Family, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        self.flush()
        it = _Iter(self._cfs[family].iter(), start, end, self._damaged)
        self._iterators.add(it)
        return it

    def delete_range(self, family: Family, start: bytes, end: bytes | None) -> None:
        """One range tombstone (after the grouped writes, applied first), the row cache
        entries of the range forgotten, and a compaction of the range queued."""
        self._check()
        if not isinstance(family, Family):
            raise TypeError("family must be a Family")
        self.flush()  # what was written before is deleted too, never resurrected
        self._check()
        stop = end if end is not None else _RANGE_END
        try:
            if start < stop:
                self._cfs[family].delete_range(start, stop, self._write_opts)
            if end is None:  # keys past the sentinel (none in the objects family)
                rest = self.scan(family, max(start, _RANGE_END))
                if rest:
                    self._apply([(family, key, None) for key, _ in rest])
        except Exception as exc:
            raise self._damaged(exc) from exc
        if family is Family.OBJECTS and self._rows:
            if len(self._rows) > ROW_FILTER_MAX:
                # finding a range's rows means visiting them all (~15 ms per 60k rows,
                # for every partition of a pass): dropping the cache costs one pass
                self._rows.clear()
                self._rows_bytes = 0
            else:
                doomed = [k for k in self._rows if k >= start and (end is None or k < end)]
                for key in doomed:
                    self._remember(key, None)
        self._compact_later(family, start, end)

    def _compact_later(self, family: Family, start: bytes, end: bytes | None) -> None:
        with self._compact_lock:
            if self._closed:
                return
            self._compact_queue.setdefault(family, []).append((start, end))
            if self._compacting:
                return  # the running job takes this range after its current one
            if self._compactor is None:
                self._compactor = ThreadPoolExecutor(1, thread_name_prefix="dynamo-compact")
                self._compact_stop = threading.Event()
            self._compacting = True
            self._compactor.submit(self._compact_queued, self._compact_stop)

    def _compact_queued(self, stop: threading.Event) -> None:
        """Compact the queued ranges, one span per family, until none is left."""
        while True:
            stop.wait(COMPACT_SETTLE_S)  # the rest of a janitor pass joins this job
            with self._compact_lock:
                queue, self._compact_queue = self._compact_queue, {}
                if not queue or stop.is_set():
                    self._compacting = False
                    return
                self._in_compaction = True
            try:
                for family, ranges in queue.items():
                    self._compact_span(family, ranges, stop)
            finally:
                with self._compact_lock:
                    self._in_compaction = False

    def _compact_span(
        self, family: Family, ranges: list[tuple[bytes, bytes | None]], stop: threading.Event
    ) -> None:
        start = min(r[0] for r in ranges)
        ends = [r[1] for r in ranges]
        end = None if None in ends else max(e for e in ends if e is not None)
        began = time.monotonic()
        try:
            self._cfs[family].compact_range(start, end, self._compact_opts)
        except Exception as exc:
            if is_corruption(exc):
                self._damaged(exc)
            log.warning("compacting %d dropped range(s) failed: %s", len(ranges), exc)
            return
        if stop.is_set():  # cancelled by close (RocksDB returns without an error)
            log.info("compaction of %d dropped range(s) cancelled", len(ranges))
            return
        self.range_compactions += 1
        log.info(
            "compacted %d dropped range(s) of %s in %.1fs",
            len(ranges),
            family.value,
            time.monotonic() - began,
        )

    def _stop_compactions(self) -> bool:
        """Stop the compaction thread; True if a running compaction had to be cancelled
        (RocksDB's background work is then stopped: closing or reopening follows)."""
        with self._compact_lock:
            pool, self._compactor = self._compactor, None
            self._compact_stop.set()
            busy = self._in_compaction
            self._compact_queue = {}
        if pool is None:
            return False
        if busy:  # a manual compaction cannot be interrupted otherwise
            with contextlib.suppress(Exception):
                self._db.cancel_all_background(True)
        pool.shutdown(wait=True, cancel_futures=True)
        self._compacting = False
        return busy

    def sync_wal(self) -> None:
        with self._sync_lock:
            if not self._closed:
                self._db.flush_wal(True)

    def approximate_size(self) -> int:
        if self._closed or self._failed is not None:
            return 0
        self.flush()
        total = 0
        for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"):
            for cf in self._cfs.values():
                value = cf.property_int_value(prop)
                total += int(value or 0)
        return total

    def close(self) -> None:
        if self._closed:
            return
        if self._failed is None:
            self.flush()
        with self._compact_lock:
            self._closed = True  # no compaction is queued from now on
        cancelled = self._stop_compactions()
        with self._sync_lock:
            for it in list(self._iterators):
                it.close()
            self._closed = True
            try:
                self._db.flush_wal(True)
            except Exception:  # closing must not fail on a flush error
                log.exception("final WAL sync failed")
            self._handles.clear()
            for f in list(self._cfs):
                if f is not Family.OBJECTS:
                    del self._cfs[f]
            self._cfs.clear()
            self._rows.clear()
            try:
                # rocksdict flushes the memtables first: on a full disk that fails, and
                # the WAL (synced above) still holds every write
                self._db.close()
            except Exception as exc:
                if cancelled:  # background work stopped: no flush; the WAL has it all
                    log.info("memtables left to the WAL (a compaction was cancelled): %s", exc)
                else:
                    log.exception("closing RocksDB failed (the WAL holds every write)")
            self._db = None


class _Iter(Iterator[tuple[bytes, bytes]]):
    """A range iterator that releases the RocksDB iterator when exhausted or closed."""

    def __init__(
        self,
        raw: Any,
        start: bytes,
        end: bytes | None,
        damaged: Callable[[BaseException], BaseException],
    ) -> None:
        self._raw: Any = raw
        self._end = end
        self._damaged = damaged
        raw.seek(start)

    def __next__(self) -> tuple[bytes, bytes]:
        raw = self._raw
        if raw is None:
            raise StopIteration
        if not raw.valid():
            # the end, or an error (a damaged block): never a silently shortened scan
            self.close()
            try:
                raw.status()
            except Exception as exc:
                raise self._damaged(exc) from exc
            raise StopIteration
        key: bytes = raw.key()
        if self._end is not None and key >= self._end:
            self.close()
            raise StopIteration
        value: bytes = raw.value()
        raw.next()
        return key, value

    def close(self) -> None:
        self._raw = None
