"""One storage contract, run over MemoryStorage and RocksStorage.

`MemoryStorage` is the reference twin of `RocksStorage`: every test below that takes the
`storage` / `open_storage` fixtures runs against both. RocksDB-only behaviour (reopening
a directory, releasing its lock) is tested at the end.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_node.core.errors import Unavailable
from dynamo_node.core.ring import key_hash, partition_of
from dynamo_node.store.storage import (
    Family,
    MemoryStorage,
    Storage,
    hash_prefix,
    partition_keys,
    storage_key,
    user_key,
)
from dynamo_node.store.storage_rocks import RocksStorage, direct_io_works

Opener = Callable[[], Storage]

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

UNICODE_KEYS = [
    "a",
    "plain-ascii",
    "with/slash/and?query=1&x#frag",
    "ключ",
    "鍵",
    "🔑🗝️",
    "e\u0301",  # combining accent
    "\u00e9",  # precomposed: a different key from the one above
    "zero\x00byte",
    "tab\tnewline\n",
    "\uffff\U0010ffff",
    "x" * 1024,
]

unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64
)


@pytest.fixture(params=["memory", "rocks", "rocks-grouped"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A factory for the backend under test; every storage it opens is closed at the end.

    For RocksDB every call opens the same directory (so it can only be open once).
    "rocks-grouped" groups writes and never applies them on its own (its scheduler drops
    the flush): every read must be answered from the not-yet-applied writes; it also has
    a row cache small enough to evict all the time."""
    opened: list[Storage] = []

    def opener() -> Storage:
        path = str(tmp_path / "db")
        s: Storage
        if request.param == "memory":
            s = MemoryStorage()
        elif request.param == "rocks":
            s = RocksStorage(path)
        else:
            s = RocksStorage(path, row_cache_bytes=4096)
        if request.param == "rocks-grouped":
            s.group_writes(lambda _flush: None)
        opened.append(s)
        return s

    yield opener
    for s in opened:
        s.close()


@pytest.fixture
def storage(open_storage: Opener) -> Storage:
    return open_storage()


def put(s: Storage, family: Family, key: bytes, value: bytes) -> None:
    s.write([(family, key, value)])


# --- get / put / delete ---------------------------------------------------------------


@pytest.mark.parametrize("family", list(Family))
def test_get_put_delete_per_family(storage: Storage, family: Family) -> None:
    assert storage.get(family, b"k") is None
    put(storage, family, b"k", b"v1")
    assert storage.get(family, b"k") == b"v1"
    put(storage, family, b"k", b"v2")
    assert storage.get(family, b"k") == b"v2"
    storage.write([(family, b"k", None)])
    assert storage.get(family, b"k") is None
    # deleting an absent key is a no-op, not an error
    storage.write([(family, b"k", None)])
    assert storage.get(family, b"k") is None
    assert storage.scan(family) == []


@pytest.mark.parametrize("family", list(Family))
def test_binary_keys_and_values(storage: Storage, family: Family) -> None:
    key, value = bytes(range(256)), b"\x00\xff" * 100
    put(storage, family, key, value)
    put(storage, family, b"", b"empty key")
    put(storage, family, b"empty value", b"")
    assert storage.get(family, key) == value
    assert storage.get(family, b"") == b"empty key"
    assert storage.get(family, b"empty value") == b""


def test_families_are_isolated(storage: Storage) -> None:
    for f in Family:
        put(storage, f, b"shared", f.value.encode())
    for f in Family:
        assert storage.get(f, b"shared") == f.value.encode()
        assert storage.scan(f) == [(b"shared", f.value.encode())]
    storage.write([(Family.HINTS, b"shared", None)])
    assert storage.get(Family.HINTS, b"shared") is None
    assert storage.get(Family.OBJECTS, b"shared") == b"default"
    assert storage.get(Family.META, b"shared") == b"meta"
    put(storage, Family.META, b"only-meta", b"x")
    assert storage.get(Family.OBJECTS, b"only-meta") is None
    assert storage.get(Family.HINTS, b"only-meta") is None
    assert [k for k, _ in storage.scan(Family.OBJECTS)] == [b"shared"]


def test_multi_op_write_applies_every_op_in_order(storage: Storage) -> None:
    put(storage, Family.OBJECTS, b"gone", b"old")
    storage.write(
        [
            (Family.OBJECTS, b"a", b"1"),
            (Family.HINTS, b"h", b"2"),
            (Family.META, b"m", b"3"),
            (Family.OBJECTS, b"gone", None),
            (Family.OBJECTS, b"a", b"1-later"),  # later ops win within a batch
            (Family.META, b"tmp", b"x"),
            (Family.META, b"tmp", None),
        ]
    )
    assert storage.get(Family.OBJECTS, b"a") == b"1-later"
    assert storage.get(Family.HINTS, b"h") == b"2"
    assert storage.get(Family.META, b"m") == b"3"
    assert storage.get(Family.OBJECTS, b"gone") is None
    assert storage.get(Family.META, b"tmp") is None
    storage.write([])  # an empty batch is fine
    assert storage.get(Family.OBJECTS, b"a") == b"1-later"


def test_multi_op_write_is_all_or_none(storage: Storage) -> None:
    """A batch that cannot be applied (here: a value that is not bytes) leaves nothing
    behind: not the ops before the bad one either."""
    put(storage, Family.META, b"keep", b"before")
    with pytest.raises((TypeError, ValueError)):
        storage.write(
            [
                (Family.OBJECTS, b"first", b"1"),
                (Family.META, b"keep", b"overwritten"),
                (Family.HINTS, b"bad", "not bytes"),  # type: ignore[list-item]
            ]
        )
    assert storage.get(Family.OBJECTS, b"first") is None
    assert storage.get(Family.META, b"keep") == b"before"
    assert storage.get(Family.HINTS, b"bad") is None


# --- scans ---------------------------------------------------------------------------


def _fill(s: Storage, family: Family, keys: list[bytes]) -> None:
    s.write([(family, k, b"v:" + k) for k in keys])


def test_scan_is_ordered_half_open_and_limited(storage: Storage) -> None:
    keys = [b"b", b"a", b"ab", b"\x00", b"\xff", b"b\x00", b"c", b"ba", b"\xff\xff"]
    _fill(storage, Family.OBJECTS, keys)
    _fill(storage, Family.HINTS, [b"b", b"bb"])  # other families never leak in
    expected = sorted(keys)
    assert [k for k, _ in storage.scan(Family.OBJECTS)] == expected
    assert storage.scan(Family.OBJECTS, b"b", b"c") == [
        (b"b", b"v:b"),
        (b"b\x00", b"v:b\x00"),
        (b"ba", b"v:ba"),
    ]
    # start is inclusive, end exclusive
    assert [k for k, _ in storage.scan(Family.OBJECTS, b"ab", b"b\x00")] == [b"ab", b"b"]
    assert [k for k, _ in storage.scan(Family.OBJECTS, b"c")] == [b"c", b"\xff", b"\xff\xff"]
    assert [k for k, _ in storage.scan(Family.OBJECTS, b"", b"a")] == [b"\x00"]
    assert storage.scan(Family.OBJECTS, b"c", b"c") == []
    assert storage.scan(Family.OBJECTS, b"d", b"c") == []
    assert storage.scan(Family.OBJECTS, b"\xff\xff\x00") == []
    # limit
    assert [k for k, _ in storage.scan(Family.OBJECTS, limit=3)] == expected[:3]
    assert [k for k, _ in storage.scan(Family.OBJECTS, b"b", limit=2)] == [b"b", b"b\x00"]
    assert [k for k, _ in storage.scan(Family.OBJECTS, limit=0)] == expected
    assert [k for k, _ in storage.scan(Family.OBJECTS, limit=100)] == expected
    assert [k for k, _ in storage.scan(Family.HINTS)] == [b"b", b"bb"]


def test_scan_sees_deletes_and_overwrites(storage: Storage) -> None:
    _fill(storage, Family.META, [b"1", b"2", b"3"])
    storage.write([(Family.META, b"2", None), (Family.META, b"3", b"new")])
    assert storage.scan(Family.META) == [(b"1", b"v:1"), (b"3", b"new")]


def test_delete_range_removes_exactly_the_half_open_range(storage: Storage) -> None:
    past_sentinel = b"\xff" * 20  # an end of None covers keys of any length
    keys = [b"a", b"b", b"b\x00", b"ba", b"bz", b"c", b"ca", b"\xff", b"\xff\xff", past_sentinel]
    _fill(storage, Family.OBJECTS, keys)
    _fill(storage, Family.HINTS, [b"b", b"ba"])
    storage.delete_range(Family.OBJECTS, b"b", b"c")
    assert [k for k, _ in storage.scan(Family.OBJECTS)] == [
        b"a",
        b"c",
        b"ca",
        b"\xff",
        b"\xff\xff",
        past_sentinel,
    ]
    assert storage.get(Family.OBJECTS, b"ba") is None and storage.get(Family.OBJECTS, b"c")
    assert [k for k, _ in storage.scan(Family.HINTS)] == [b"b", b"ba"]  # other families kept
    storage.delete_range(Family.OBJECTS, b"b", b"c")  # again: nothing left to delete
    storage.delete_range(Family.OBJECTS, b"c", b"c")  # empty range
    storage.delete_range(Family.OBJECTS, b"z", b"c")  # reversed: nothing
    assert len(storage.scan(Family.OBJECTS)) == 6
    put(storage, Family.OBJECTS, b"bb", b"again")  # a later write is kept
    assert storage.get(Family.OBJECTS, b"bb") == b"again"
    storage.delete_range(Family.OBJECTS, b"c", None)
    assert [k for k, _ in storage.scan(Family.OBJECTS)] == [b"a", b"bb"]
    for key in (b"c", b"\xff", past_sentinel):
        assert storage.get(Family.OBJECTS, key) is None


def test_delete_range_covers_the_writes_before_it(storage: Storage) -> None:
    """Writes accepted just before (grouped, not yet applied) are deleted too; the
    ones just after are kept; a partition's range drops exactly that partition."""
    q = 8
    keys = [storage_key(f"user:{i}") for i in range(300)]
    storage.write([(Family.OBJECTS, k, b"1") for k in keys])
    for k in keys[:50]:
        assert storage.get(Family.OBJECTS, k) == b"1"  # cached where a cache is
    start, end = partition_keys(3, q)
    storage.delete_range(Family.OBJECTS, start, end)
    inside = [k for k in keys if partition_of(int.from_bytes(k[:8]), q) == 3]
    assert inside
    for k in keys:
        assert (storage.get(Family.OBJECTS, k) is None) == (k in inside)
    assert storage.scan(Family.OBJECTS, start, end) == []
    storage.write([(Family.OBJECTS, inside[0], b"2")])
    assert storage.scan(Family.OBJECTS, start, end) == [(inside[0], b"2")]
    last_start, _ = partition_keys(q - 1, q)
    storage.delete_range(Family.OBJECTS, last_start, None)
    assert storage.scan(Family.OBJECTS, last_start) == []
    with pytest.raises(TypeError):
        storage.delete_range("default", b"a", b"b")  # type: ignore[arg-type]


@given(
    keys=st.sets(st.binary(max_size=6), max_size=30),
    start=st.binary(max_size=6),
    end=st.none() | st.binary(max_size=6),
    limit=st.integers(0, 10),
)
@SETTINGS
def test_scan_matches_a_sorted_model(
    keys: set[bytes], start: bytes, end: bytes | None, limit: int
) -> None:
    # MemoryStorage against a plain model (RocksStorage is checked against MemoryStorage
    # by the deterministic tests above; a RocksDB per example would be too slow)
    s = MemoryStorage()
    _fill(s, Family.OBJECTS, list(keys))
    want = [k for k in sorted(keys) if k >= start and (end is None or k < end)]
    if limit:
        want = want[:limit]
    assert [k for k, _ in s.scan(Family.OBJECTS, start, end, limit)] == want


def test_rocks_scan_matches_memory_scan(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    keys = {rng.randbytes(rng.randint(0, 5)) for _ in range(300)}
    mem, rocks = MemoryStorage(), RocksStorage(str(tmp_path / "db"))
    try:
        for s in (mem, rocks):
            _fill(s, Family.OBJECTS, sorted(keys))
        bounds = [b"", b"\x00", b"\x80", b"\xff", *sorted(keys)[::37]]
        for start in bounds:
            for end in [None, *bounds]:
                for limit in (0, 1, 7):
                    assert rocks.scan(Family.OBJECTS, start, end, limit) == mem.scan(
                        Family.OBJECTS, start, end, limit
                    )
    finally:
        rocks.close()


# --- iter_range ------------------------------------------------------------------------


def test_iter_range_is_lazy_and_ordered(storage: Storage) -> None:
    keys = [f"k{i:04d}".encode() for i in range(500)]
    _fill(storage, Family.OBJECTS, keys)
    it = storage.iter_range(Family.OBJECTS, b"k0100", b"k0200")
    assert not isinstance(it, list | tuple)
    assert next(it) == (b"k0100", b"v:k0100")
    assert next(it) == (b"k0101", b"v:k0101")
    rest = list(it)
    assert [k for k, _ in rest] == keys[102:200]
    assert list(it) == []  # exhausted stays exhausted
    assert [k for k, _ in storage.iter_range(Family.OBJECTS)] == keys
    assert list(storage.iter_range(Family.OBJECTS, b"z")) == []


def test_iter_range_can_be_closed_early_then_storage_closed(open_storage: Opener) -> None:
    s = open_storage()
    _fill(s, Family.HINTS, [f"h{i:03d}".encode() for i in range(100)])
    it = s.iter_range(Family.HINTS)
    assert next(it)[0] == b"h000"
    it.close()  # type: ignore[attr-defined]
    assert list(it) == []
    # the storage stays usable after an iterator was closed
    assert s.get(Family.HINTS, b"h050") == b"v:h050"
    assert len(s.scan(Family.HINTS)) == 100
    s.close()


def test_many_iterators_at_once(storage: Storage) -> None:
    _fill(storage, Family.OBJECTS, [bytes([i]) for i in range(10)])
    its = [storage.iter_range(Family.OBJECTS, bytes([i])) for i in range(10)]
    firsts = [next(it) for it in its]
    assert [k for k, _ in firsts] == [bytes([i]) for i in range(10)]
    assert [len(list(it)) for it in its] == [9 - i for i in range(10)]


# --- closing -------------------------------------------------------------------------


def test_use_after_close_raises_unavailable(storage: Storage) -> None:
    put(storage, Family.OBJECTS, b"k", b"v")
    storage.close()
    with pytest.raises(Unavailable):
        storage.get(Family.OBJECTS, b"k")
    with pytest.raises(Unavailable):
        storage.write([(Family.OBJECTS, b"k", b"v2")])
    with pytest.raises(Unavailable):
        storage.write([(Family.META, b"a", b"1"), (Family.HINTS, b"b", b"2")])
    with pytest.raises(Unavailable):
        storage.scan(Family.OBJECTS)
    with pytest.raises(Unavailable):
        list(storage.iter_range(Family.OBJECTS))
    storage.close()  # closing twice is harmless


def test_close_with_an_unfinished_iterator(open_storage: Opener) -> None:
    """Closing must not hang or fail while an iterator is half consumed; the old iterator
    must not crash the process afterwards; the storage can be opened again."""
    s = open_storage()
    _fill(s, Family.OBJECTS, [f"k{i:04d}".encode() for i in range(1000)])
    it = s.iter_range(Family.OBJECTS)
    next(it)
    done = threading.Event()

    def close() -> None:
        s.close()
        done.set()

    t = threading.Thread(target=close, daemon=True)
    t.start()
    assert done.wait(10), "close() hung with an open iterator"
    try:
        for _ in it:  # whatever it yields, it must not crash
            pass
    except Unavailable:
        pass
    s2 = open_storage()
    if isinstance(s2, RocksStorage):
        assert s2.get(Family.OBJECTS, b"k0999") == b"v:k0999"
        assert len(s2.scan(Family.OBJECTS)) == 1000


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", UNICODE_KEYS)
def test_storage_key_round_trips_through_storage(storage: Storage, key: str) -> None:
    skey = storage_key(key)
    assert user_key(skey) == key
    assert skey[:8] == hash_prefix(key_hash(key.encode()))
    put(storage, Family.OBJECTS, skey, key.encode())
    [(got, value)] = storage.scan(Family.OBJECTS)
    assert got == skey and user_key(got) == key and value == key.encode()


@given(unicode_text)
@SETTINGS
def test_storage_key_round_trip(key: str) -> None:
    skey = storage_key(key)
    assert user_key(skey) == key
    assert skey[8:] == key.encode()
    assert int.from_bytes(skey[:8], "big") == key_hash(key.encode())


@given(st.lists(unicode_text, min_size=2, max_size=2, unique=True))
@SETTINGS
def test_distinct_keys_have_distinct_storage_keys(keys: list[str]) -> None:
    a, b = keys
    assert storage_key(a) != storage_key(b)


@given(
    key=unicode_text,
    bits=st.integers(0, 16),
)
@SETTINGS
def test_partition_range_holds_exactly_its_keys(key: str, bits: int) -> None:
    q = 1 << bits
    skey = storage_key(key)
    p = partition_of(key_hash(key.encode()), q)
    for other in {0, p - 1, p, p + 1, q - 1}:
        if not 0 <= other < q:
            continue
        start, end = partition_keys(other, q)
        inside = start <= skey and (end is None or skey < end)
        assert inside == (other == p), (key, q, p, other)


@given(h=st.integers(0, (1 << 64) - 1), suffix=st.binary(max_size=8), bits=st.integers(0, 12))
@SETTINGS
def test_partition_ranges_tile_the_keyspace(h: int, suffix: bytes, bits: int) -> None:
    """Any byte string laid out as hash + suffix is in exactly the partition of its hash;
    consecutive partition ranges are adjacent (together they cover everything)."""
    q = 1 << bits
    skey = hash_prefix(h) + suffix
    p = partition_of(h, q)
    start, end = partition_keys(p, q)
    assert start <= skey and (end is None or skey < end)
    if p + 1 < q:
        assert end == partition_keys(p + 1, q)[0]
    else:
        assert end is None
    if p > 0:
        prev_end = partition_keys(p - 1, q)[1]
        assert prev_end is not None and skey >= prev_end
    assert partition_keys(0, q)[0] == b"\x00" * 8


@pytest.mark.parametrize("q", [1, 2, 8, 256])
def test_scanning_a_partition_returns_exactly_its_keys(storage: Storage, q: int) -> None:
    keys = [f"user:{i}" for i in range(400)] + UNICODE_KEYS
    storage.write([(Family.OBJECTS, storage_key(k), k.encode()) for k in keys])
    seen: list[str] = []
    for p in range(q):
        start, end = partition_keys(p, q)
        got = [user_key(k) for k, _ in storage.scan(Family.OBJECTS, start, end)]
        assert all(partition_of(key_hash(k.encode()), q) == p for k in got)
        assert sorted(got) == sorted(k for k in keys if partition_of(key_hash(k.encode()), q) == p)
        seen.extend(got)
    assert sorted(seen) == sorted(keys)


# --- RocksDB specifics -----------------------------------------------------------------


def test_rocks_reopen_keeps_data(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    s = RocksStorage(path)
    for f in Family:
        s.write([(f, b"k-" + f.value.encode(), b"v-" + f.value.encode())])
    s.write([(Family.OBJECTS, storage_key(k), k.encode()) for k in UNICODE_KEYS])
    s.write([(Family.OBJECTS, b"deleted", b"x")])
    s.write([(Family.OBJECTS, b"deleted", None)])
    s.sync_wal()
    s.close()

    s = RocksStorage(path)
    try:
        for f in Family:
            assert s.get(f, b"k-" + f.value.encode()) == b"v-" + f.value.encode()
        assert s.get(Family.OBJECTS, b"deleted") is None
        for k in UNICODE_KEYS:
            assert s.get(Family.OBJECTS, storage_key(k)) == k.encode()
        assert len(s.scan(Family.OBJECTS)) == 1 + len(UNICODE_KEYS)
        assert s.approximate_size() > 0
    finally:
        s.close()


def test_direct_io_is_used_only_where_the_filesystem_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "db")
    s = RocksStorage(path)
    try:
        assert s.direct_io is direct_io_works(str(tmp_path))
        assert not [n for n in os.listdir(path) if "probe" in n]  # the probe left no file
    finally:
        s.close()
    # a filesystem that refuses O_DIRECT (tmpfs before Linux 6.6): tables are then
    # written through the page cache, and the node works as before
    real_open = os.open

    def no_direct(file: str, flags: int, mode: int = 0o777) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(file, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    assert direct_io_works(path) is False
    s = RocksStorage(str(tmp_path / "db2"))
    try:
        assert s.direct_io is False
        s.write([(Family.OBJECTS, b"k", b"v")])
        s._db.flush(True)
        assert s.get(Family.OBJECTS, b"k") == b"v"
    finally:
        s.close()


def test_tables_written_with_direct_io_read_back_after_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    os.makedirs(path)
    if not direct_io_works(path):
        pytest.skip("this filesystem does not take O_DIRECT")
    values = {f"k{i:05d}".encode(): os.urandom(1000 + i % 300) for i in range(3000)}
    s = RocksStorage(path)
    try:
        assert s.direct_io
        for n, (k, v) in enumerate(values.items()):
            s.write([(Family.OBJECTS, k, v)])
            if n % 1000 == 999:
                s._db.flush(True)  # three tables, unaligned sizes
        s._db.compact_range(None, None)  # read and rewritten by a compaction
    finally:
        s.close()
    s = RocksStorage(path)
    try:
        assert dict(s.scan(Family.OBJECTS)) == values
    finally:
        s.close()


def test_rocks_reopen_without_explicit_sync(tmp_path: Path) -> None:
    """A write is in the WAL at once: a clean close (no sync_wal by the caller) keeps it."""
    path = str(tmp_path / "db")
    s = RocksStorage(path)
    s.write([(Family.META, b"m", b"1"), (Family.HINTS, b"h", b"2")])
    s.close()
    s = RocksStorage(path)
    try:
        assert s.get(Family.META, b"m") == b"1"
        assert s.get(Family.HINTS, b"h") == b"2"
    finally:
        s.close()


def test_rocks_close_with_open_iterators_releases_the_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    s = RocksStorage(path)
    _fill(s, Family.OBJECTS, [f"k{i:04d}".encode() for i in range(2000)])
    _fill(s, Family.HINTS, [b"h1", b"h2"])
    held = [s.iter_range(Family.OBJECTS), s.iter_range(Family.HINTS), s.iter_range(Family.META)]
    next(held[0])
    next(held[1])
    s.close()
    assert [list(it) for it in held] == [[], [], []]
    s = RocksStorage(path)  # raises if the LOCK is still held by this process
    try:
        assert s.get(Family.HINTS, b"h2") == b"v:h2"
        assert len(s.scan(Family.OBJECTS)) == 2000
    finally:
        s.close()
    del held


def test_rocks_sync_wal_from_threads(tmp_path: Path) -> None:
    s = RocksStorage(str(tmp_path / "db"))
    try:
        errors: list[BaseException] = []

        def syncer() -> None:
            try:
                for _ in range(20):
                    s.sync_wal()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=syncer) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(200):
            s.write([(Family.OBJECTS, f"k{i}".encode(), b"v")])
        for t in threads:
            t.join(10)
        assert not errors
        assert len(s.scan(Family.OBJECTS)) == 200
    finally:
        s.close()


# --- write grouping (RocksStorage) ------------------------------------------------------------
def test_grouped_writes_apply_once_per_schedule_and_survive_reopen(tmp_path: Path) -> None:
    s = RocksStorage(str(tmp_path / "db"))
    scheduled: list[Callable[[], None]] = []
    applied: list[BaseException | None] = []
    s.group_writes(scheduled.append)
    s.flush_hooks.append(applied.append)
    put(s, Family.OBJECTS, b"k1", b"v1")
    put(s, Family.HINTS, b"h1", b"x")
    s.write([(Family.OBJECTS, b"k1", None), (Family.OBJECTS, b"k2", b"v2")])
    assert len(scheduled) == 1 and s.has_pending() and not applied
    assert s.get(Family.OBJECTS, b"k1") is None and s.get(Family.OBJECTS, b"k2") == b"v2"
    scheduled[0]()
    assert not s.has_pending() and applied == [None]
    put(s, Family.OBJECTS, b"k3", b"v3")
    assert len(scheduled) == 2  # a new group
    s.close()  # applies what is pending
    s = RocksStorage(str(tmp_path / "db"))
    assert [s.get(Family.OBJECTS, k) for k in (b"k1", b"k2", b"k3")] == [None, b"v2", b"v3"]
    assert s.get(Family.HINTS, b"h1") == b"x"
    s.close()


def test_a_failed_group_makes_the_storage_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = RocksStorage(str(tmp_path / "db"))
    applied: list[BaseException | None] = []
    s.group_writes(lambda _flush: None)
    s.flush_hooks.append(applied.append)
    put(s, Family.OBJECTS, b"k", b"v")

    def broken(ops: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(s, "_apply", broken)
    s.flush()
    assert len(applied) == 1 and isinstance(applied[0], OSError)
    with pytest.raises(Unavailable):
        s.get(Family.OBJECTS, b"k")
    with pytest.raises(Unavailable):
        put(s, Family.OBJECTS, b"k2", b"v")
    monkeypatch.undo()
    s.close()


def test_row_cache_follows_writes_and_stays_bounded(tmp_path: Path) -> None:
    s = RocksStorage(str(tmp_path / "db"), row_cache_bytes=64 * 1024)
    keys = [b"k%04d" % i for i in range(200)]
    for i, k in enumerate(keys):
        put(s, Family.OBJECTS, k, b"v%d" % i * 100)
    assert s._rows_bytes <= 64 * 1024 and 0 < len(s._rows) < len(keys)  # evicted
    assert s.get(Family.OBJECTS, keys[-1]) == b"v199" * 100 and s.row_hits == 1
    for i, k in enumerate(keys):  # misses are read from RocksDB (and cached)
        assert s.get(Family.OBJECTS, k) == b"v%d" % i * 100
    assert s.row_misses and s._rows_bytes <= 64 * 1024
    put(s, Family.OBJECTS, keys[-1], b"new")
    s.write([(Family.OBJECTS, keys[-2], None)])
    assert s.get(Family.OBJECTS, keys[-1]) == b"new"
    assert s.get(Family.OBJECTS, keys[-2]) is None
    put(s, Family.OBJECTS, b"huge", b"x" * 8192)  # over 1/64 of the cache: not cached
    assert b"huge" not in s._rows and s.get(Family.OBJECTS, b"huge") == b"x" * 8192
    s.close()


def test_delete_range_forgets_the_row_cache_and_survives_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "db")
    s = RocksStorage(path, row_cache_bytes=1 << 20)
    keys = [b"k%04d" % i for i in range(200)]
    s.write([(Family.OBJECTS, k, b"v" + k) for k in keys])
    for k in keys:
        assert s.get(Family.OBJECTS, k) == b"v" + k
    assert len(s._rows) == len(keys)
    s.delete_range(Family.OBJECTS, b"k0050", b"k0150")
    assert len(s._rows) == 100 and b"k0050" not in s._rows and b"k0150" in s._rows
    hits = s.row_hits
    assert s.get(Family.OBJECTS, b"k0100") is None
    assert s.get(Family.OBJECTS, b"k0150") == b"vk0150" and s.row_hits == hits + 1
    monkeypatch.setattr("dynamo_node.store.storage_rocks.ROW_FILTER_MAX", 10)
    s.delete_range(Family.OBJECTS, b"k0000", b"k0010")  # a large cache is cleared
    assert not s._rows and s._rows_bytes == 0
    assert s.get(Family.OBJECTS, b"k0005") is None
    assert s.get(Family.OBJECTS, b"k0010") == b"vk0010"
    s.sync_wal()
    s.close()
    s = RocksStorage(path)
    try:
        assert [k for k, _ in s.scan(Family.OBJECTS)] == keys[10:50] + keys[150:]
    finally:
        s.close()


def _tables_and_wal(path: Path) -> tuple[int, int]:
    sst = sum(p.stat().st_size for p in path.glob("*.sst"))
    return sst, sum(p.stat().st_size for p in path.glob("*.log"))


def test_a_dropped_range_is_compacted_away_in_the_background(tmp_path: Path) -> None:
    import time

    path = tmp_path / "db"
    s = RocksStorage(str(path))
    keys = [storage_key(f"user:{i}") for i in range(20_000)]
    for i in range(0, len(keys), 1000):  # incompressible: only deleting makes it smaller
        s.write([(Family.OBJECTS, k, os.urandom(500)) for k in keys[i : i + 1000]])
    s._db.flush()
    before, _ = _tables_and_wal(path)
    start, _ = partition_keys(0, 4)
    _, end = partition_keys(1, 4)  # half the keyspace, as two adjacent partitions
    s.delete_range(Family.OBJECTS, start, partition_keys(0, 4)[1])
    s.delete_range(Family.OBJECTS, partition_keys(1, 4)[0], end)
    deadline = time.monotonic() + 30
    while s.range_compactions < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.range_compactions == 1  # both ranges in one compaction
    after, _ = _tables_and_wal(path)
    assert after < before * 0.7, (before, after)
    assert len(s.scan(Family.OBJECTS)) == sum(1 for k in keys if k >= (end or b""))
    s.close()


def test_closing_during_a_compaction_is_prompt_and_keeps_every_write(tmp_path: Path) -> None:
    import time

    path = str(tmp_path / "db")
    s = RocksStorage(path)
    keys = [storage_key(f"user:{i}") for i in range(40_000)]
    for i in range(0, len(keys), 1000):
        s.write([(Family.OBJECTS, k, os.urandom(1000)) for k in keys[i : i + 1000]])
        s._db.flush()  # many tables: a compaction that takes a while (~0.2 s)
    _, end = partition_keys(0, 2)
    s.delete_range(Family.OBJECTS, b"", end)
    s.write([(Family.META, b"after", b"1")])
    deadline = time.monotonic() + 10
    while not s._in_compaction and s.range_compactions == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert s._in_compaction
    began = time.monotonic()
    s.close()
    assert time.monotonic() - began < 5
    assert s.range_compactions == 0  # cancelled, not waited for
    s = RocksStorage(path)
    try:
        assert s.get(Family.META, b"after") == b"1"
        assert [k for k, _ in s.scan(Family.OBJECTS)] == sorted(k for k in keys if k >= end)
    finally:
        s.close()


# --- a bounded write-ahead log ----------------------------------------------------------
_WAL_SCRIPT = """
import os, sys, time
from pathlib import Path
from dynamo_node.store.storage import Family
from dynamo_node.store.storage_rocks import RocksStorage
path, bound = sys.argv[1], int(sys.argv[2])
s = RocksStorage(path, max_total_wal_bytes=bound)
def wal():
    total = 0
    for log in Path(path).glob("*.log"):
        try:
            total += log.stat().st_size
        except FileNotFoundError:  # deleted meanwhile: what the bound is for
            pass
    return total
# the meta and hints families get a write now and then, objects all the others
s.write([(Family.META, b"node-id", b"n0"), (Family.HINTS, b"h0", b"x" * 100)])
worst = 0
for i in range(24 * 1024 // 64):  # 24 MiB in batches of 64 x 1 KiB
    ops = [(Family.OBJECTS, b"k%06d" % (i * 64 + j), b"%06d" % i * 170) for j in range(64)]
    if i % 50 == 0:
        ops.append((Family.HINTS, b"h%06d" % i, b"y" * 100))
        ops.append((Family.META, b"m%06d" % i, b"z" * 100))
    s.write(ops)
    worst = max(worst, wal())
    time.sleep(0.002)  # ~30 MiB/s: a node's pace, not faster than RocksDB flushes
time.sleep(1)
s.write([(Family.META, b"last", b"1")])  # a write checks the bound (and so a switch)
time.sleep(1)
s.sync_wal()
print(worst, wal())
os._exit(0)  # like kill -9: nothing flushed at close, the WAL alone holds the rest
"""


def test_the_wal_stays_bounded_across_families_and_keeps_every_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "db"
    bound = 2 * 1024 * 1024
    out = subprocess.run(
        [sys.executable, "-c", _WAL_SCRIPT, str(path), str(bound)],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    worst, final = (int(x) for x in out.stdout.split()[-2:])
    # the bound is checked at each write; logs go once the flushes it starts are done
    assert worst < 5 * bound, f"WAL reached {worst / 2**20:.1f} MiB"
    assert final < 3 * bound, f"WAL kept {final / 2**20:.1f} MiB"
    s = RocksStorage(str(path), max_total_wal_bytes=bound)
    try:
        objects = s.scan(Family.OBJECTS)
        assert len(objects) == 24 * 1024
        assert objects[-1] == (b"k%06d" % (24 * 1024 - 1), b"%06d" % 383 * 170)
        assert s.get(Family.META, b"node-id") == b"n0"
        assert len(s.scan(Family.HINTS)) == 1 + 8 and len(s.scan(Family.META)) == 1 + 8 + 1
    finally:
        s.close()


def test_the_options_file_records_the_wal_bound(tmp_path: Path) -> None:
    from dynamo_node.store.storage_rocks import MAX_TOTAL_WAL_BYTES

    path = tmp_path / "db"
    RocksStorage(str(path)).close()
    latest = max(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    text = latest.read_text()
    assert f"max_total_wal_size={MAX_TOTAL_WAL_BYTES}" in text
    assert "avoid_flush_during_recovery=true" in text  # loaded from our OPTIONS file


# --- damaged table files (real RocksDB directories) -----------------------------------
def _damaged_table(path: Path, keys: int = 20000) -> list[bytes]:
    """A directory whose one table file has 512 bytes overwritten in a data block (a
    quarter in: the index and filter blocks are at the end, checked at open)."""
    s = RocksStorage(str(path))
    names = [b"k%06d" % i for i in range(keys)]
    for name in names:
        s.write([(Family.OBJECTS, name, name * 10)])
    s._db.flush()
    s.close()
    (table,) = [p for p in path.glob("*.sst") if p.stat().st_size > 1 << 20]
    with open(table, "r+b") as f:
        f.seek(table.stat().st_size // 4)
        f.write(os.urandom(512))
    return names


def test_a_damaged_table_block_fails_reads_and_is_never_not_found(tmp_path: Path) -> None:
    from dynamo_node.core.errors import StorageCorrupt
    from dynamo_node.store.storage_rocks import CORRUPTION_MARKER

    path = tmp_path / "db"
    names = _damaged_table(path)
    s = RocksStorage(str(path))  # the open checks index and filter blocks only
    outcomes = {"ok": 0, "corrupt": 0}
    for name in names:
        try:
            value = s.get(Family.OBJECTS, name)
        except StorageCorrupt as exc:
            outcomes["corrupt"] += 1
            assert ".sst" in str(exc), exc  # RocksDB names the file
            continue
        assert value == name * 10, name  # never None, never other bytes
        outcomes["ok"] += 1
    assert outcomes["corrupt"] > 0 and outcomes["ok"] > 0, outcomes
    assert isinstance(s.failure, StorageCorrupt)
    assert s.corruptions == 1
    s.recover()  # a reopen cannot mend damaged data: it stays failed
    assert isinstance(s.failure, StorageCorrupt)
    with pytest.raises(StorageCorrupt):
        s.write([(Family.OBJECTS, b"x", b"y")])
    s.close()
    marker = path / CORRUPTION_MARKER
    assert ".sst" in marker.read_text()
    with pytest.raises(StorageCorrupt, match="Corruption recorded"):
        RocksStorage(str(path))  # the next start refuses it too


def test_a_scan_over_a_damaged_table_block_raises_instead_of_stopping(tmp_path: Path) -> None:
    from dynamo_node.core.errors import StorageCorrupt

    path = tmp_path / "db"
    names = _damaged_table(path)
    s = RocksStorage(str(path))
    seen = 0
    with pytest.raises(StorageCorrupt):
        for _ in s.iter_range(Family.OBJECTS):
            seen += 1
    assert 0 < seen < len(names)
    assert isinstance(s.failure, StorageCorrupt) and s.corruptions == 1
    s.close()


def test_a_reopen_keeps_the_wal_instead_of_writing_a_table(tmp_path: Path) -> None:
    """avoid_flush_during_recovery: replaying the WAL writes no table file (a start on
    a full disk would otherwise need about the WAL's size free)."""
    import subprocess
    import sys

    path = tmp_path / "db"
    script = (
        "import os, sys\n"
        "from dynamo_node.store.storage import Family\n"
        "from dynamo_node.store.storage_rocks import RocksStorage\n"
        "s = RocksStorage(sys.argv[1])\n"
        "s.write([(Family.OBJECTS, b'k%04d' % i, b'v' * 1000) for i in range(2000)])\n"
        "s.sync_wal()\n"
        "os._exit(0)\n"  # like kill -9: nothing flushed at close
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert not list(path.glob("*.sst"))
    again = RocksStorage(str(path))
    assert not list(path.glob("*.sst")), sorted(p.name for p in path.iterdir())
    assert again.get(Family.OBJECTS, b"k1999") == b"v" * 1000
    again._db.flush()  # a normal flush still writes tables
    assert list(path.glob("*.sst"))
    again.close()
