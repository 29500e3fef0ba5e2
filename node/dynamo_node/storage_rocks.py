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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from .errors import StorageCorrupt, Unavailable
from .storage import Family, Op

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


def _options(direct_io: bool = False, max_open_files: int = -1) -> Options:
    opts = _base_options()
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
    def __init__(self, path: str, row_cache_bytes: int = 0, max_open_files: int = -1) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
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

    def _open(self) -> None:
        self._db: Any = Rdict(
            self.path,
            options=_options(self.direct_io, self.max_open_files),
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
            except Exception:
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
