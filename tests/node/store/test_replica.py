"""Replica: fresh dots from a leased persistent counter, merges, listeners, corruption."""

from __future__ import annotations

import pytest

from dynamo_node.core.codec import decode_object, encode_object
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.ring import key_hash, partition_of
from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, update
from dynamo_node.store import replica as replica_mod
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import COUNTER_KEY, Replica
from dynamo_node.store.storage import Family, MemoryStorage, partition_keys, storage_key

ACTOR = "node-a"
CONFIG = NodeConfig(data_dir="/nonexistent")
K1, K2 = storage_key("k1"), storage_key("k2")


def make(storage: MemoryStorage, actor: str = ACTOR) -> Replica:
    return Replica(
        storage, GroupCommit(storage, "wal", 60.0), actor, CONFIG, clock_ms=lambda: 1_000
    )


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def my_dots(obj: Object, actor: str = ACTOR) -> list[int]:
    return sorted(s.dot.counter for s in obj.siblings if s.dot.actor == actor)


def newest(obj: Object, actor: str = ACTOR) -> int:
    return max(my_dots(obj, actor))


def peer_version(actor: str, counter: int, value: bytes, base: Object | None = None) -> Object:
    ctx = base.context() if base is not None else VClock()
    return update(base or Object(), ctx, Dot(actor, counter), value, "text/plain", 2_000)


# --- dots ----------------------------------------------------------------------------------


def test_put_issues_increasing_unique_dots(storage: MemoryStorage) -> None:
    r = make(storage)
    issued: list[int] = []
    for i in range(50):
        skey = (K1, K2, storage_key(f"k{i % 7}"))[i % 3]
        current = r.read(skey)
        ctx = current.context() if i % 2 else VClock()  # resolve, or add a sibling
        obj = r.apply_put(skey, ctx, f"v{i}".encode(), "text/plain")
        issued.append(newest(obj))
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)


def test_put_with_context_replaces_and_without_adds_a_sibling(storage: MemoryStorage) -> None:
    r = make(storage)
    first = r.apply_put(K1, VClock(), b"1", "text/plain")
    second = r.apply_put(K1, VClock(), b"2", "text/plain")
    assert {s.value for s in second.siblings} == {b"1", b"2"}
    third = r.apply_put(K1, second.context(), b"3", "text/plain")
    assert [s.value for s in third.siblings] == [b"3"]
    assert r.read(K1) == third
    assert newest(first) < newest(second) < newest(third)
    deleted = r.apply_put(K1, third.context(), None, "")
    assert deleted.all_tombstones()


def test_dots_stay_fresh_after_the_key_is_removed(storage: MemoryStorage) -> None:
    r = make(storage)
    old = newest(r.apply_put(K1, VClock(), b"v", "text/plain"))
    r.apply_put(K1, r.read(K1).context(), b"v2", "text/plain")
    old = max(old, newest(r.read(K1)))
    r.remove(K1)
    assert r.read(K1).empty and storage.get(Family.OBJECTS, K1) is None
    again = r.apply_put(K1, VClock(), b"again", "text/plain")
    assert newest(again) > old
    # the new version must not be mistaken for the old one by a replica that kept it
    assert my_dots(again) == [newest(again)]


def test_counter_lease_survives_a_restart(storage: MemoryStorage) -> None:
    r = make(storage)
    seen: set[int] = set()
    for i in range(10):
        seen.add(newest(r.apply_put(storage_key(f"k{i}"), VClock(), b"v", "text/plain")))
    assert storage.get(Family.META, COUNTER_KEY) is not None
    for i in range(10):
        r.remove(storage_key(f"k{i}"))
    restarted = make(storage)  # a new process: only the storage survived
    for i in range(10):
        c = newest(restarted.apply_put(storage_key(f"k{i}"), VClock(), b"v", "text/plain"))
        assert c > max(seen)
        assert c not in seen
        seen.add(c)


def test_counter_lease_across_many_restarts_and_lease_boundaries(
    storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_mod, "COUNTER_LEASE", 3)
    seen: list[int] = []
    r = make(storage)
    for round_ in range(12):
        for i in range(round_ % 5 + 1):
            skey = storage_key(f"k{i}")
            obj = r.apply_put(skey, VClock(), b"v", "text/plain")
            c = newest(obj)
            assert not seen or c > max(seen), (round_, i, c, seen[-3:])
            seen.append(c)
            if i % 2:
                r.remove(skey)
        r = make(storage)  # restart: forgets everything but the storage
    assert len(set(seen)) == len(seen)


def test_a_context_naming_a_future_counter_moves_the_lease(
    storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client context may carry a counter of this actor above the lease (e.g. this node
    lost its data and restarted from scratch): the dot issued is above it, and so is every
    dot issued after a restart."""
    monkeypatch.setattr(replica_mod, "COUNTER_LEASE", 5)
    r = make(storage)
    ctx = VClock.of({ACTOR: 1_000})
    c = newest(r.apply_put(K1, ctx, b"v", "text/plain"))
    assert c > 1_000
    restarted = make(storage)
    assert newest(restarted.apply_put(K2, VClock(), b"v", "text/plain")) > c


def test_two_actors_do_not_share_counters(storage: MemoryStorage) -> None:
    a, b = make(storage, "a"), make(MemoryStorage(), "b")
    obj_a = a.apply_put(K1, VClock(), b"a", "text/plain")
    obj_b = b.apply_put(K1, VClock(), b"b", "text/plain")
    assert [s.dot.actor for s in obj_a.siblings] == ["a"]
    assert [s.dot.actor for s in obj_b.siblings] == ["b"]


# --- merges --------------------------------------------------------------------------------


def test_apply_merge_changed_flags(storage: MemoryStorage) -> None:
    r = make(storage)
    v1 = peer_version("peer", 1, b"one")
    result, changed = r.apply_merge(K1, v1)
    assert changed and result == v1 and r.read(K1) == v1

    result, changed = r.apply_merge(K1, v1)  # the same again
    assert not changed and result == v1

    v2 = peer_version("peer", 2, b"two", base=v1)  # supersedes v1
    result, changed = r.apply_merge(K1, v2)
    assert changed and result == v2 and r.read(K1) == v2

    result, changed = r.apply_merge(K1, v1)  # an older version
    assert not changed and r.read(K1) == v2

    concurrent = peer_version("other", 1, b"other")
    result, changed = r.apply_merge(K1, concurrent)
    assert changed
    assert {s.value for s in result.siblings} == {b"two", b"other"}
    assert r.read(K1) == result

    result, changed = r.apply_merge(K1, Object())  # nothing at all
    assert not changed and r.read(K1) == result

    assert r.stats.merges == 6 and r.stats.merges_changed == 3


def test_apply_merge_of_nothing_into_nothing_writes_nothing(storage: MemoryStorage) -> None:
    r = make(storage)
    result, changed = r.apply_merge(K1, Object())
    assert not changed and result.empty
    assert storage.get(Family.OBJECTS, K1) is None


def test_apply_merge_with_a_local_write(storage: MemoryStorage) -> None:
    r = make(storage)
    mine = r.apply_put(K1, VClock(), b"mine", "text/plain")
    theirs = peer_version("peer", 1, b"theirs")
    result, changed = r.apply_merge(K1, theirs)
    assert changed and {s.value for s in result.siblings} == {b"mine", b"theirs"}
    resolved = peer_version("peer", 2, b"resolved", base=result)
    result, changed = r.apply_merge(K1, resolved)
    assert changed and [s.value for s in result.siblings] == [b"resolved"]
    result, changed = r.apply_merge(K1, mine)  # my old write came back via gossip
    assert not changed and r.read(K1) == resolved


# --- listeners -----------------------------------------------------------------------------


def test_listeners_see_every_change(storage: MemoryStorage) -> None:
    r = make(storage)
    calls: list[tuple[bytes, bytes | None, bytes | None]] = []
    r.listeners.append(lambda skey, old, new: calls.append((skey, old, new)))

    first = r.apply_put(K1, VClock(), b"1", "text/plain")
    assert calls == [(K1, None, encode_object(first))]

    second = r.apply_put(K1, first.context(), b"2", "text/plain")
    assert calls[-1] == (K1, encode_object(first), encode_object(second))

    merged, changed = r.apply_merge(K1, peer_version("peer", 1, b"p"))
    assert changed
    assert calls[-1] == (K1, encode_object(second), encode_object(merged))
    assert decode_object(calls[-1][2] or b"") == merged

    n = len(calls)
    r.apply_merge(K1, peer_version("peer", 1, b"p"))  # no change: no call
    r.apply_merge(K2, Object())
    assert len(calls) == n

    r.remove(K1)
    assert calls[-1] == (K1, encode_object(merged), None)
    r.remove(K1)  # absent: no call
    assert len(calls) == n + 1

    # every `new` is exactly what was stored
    for _skey, _, new in calls:
        assert new is None or decode_object(new).siblings


def test_several_listeners_are_all_called(storage: MemoryStorage) -> None:
    r = make(storage)
    seen_a: list[bytes] = []
    seen_b: list[bytes] = []
    r.listeners.append(lambda skey, old, new: seen_a.append(skey))
    r.listeners.append(lambda skey, old, new: seen_b.append(skey))
    r.apply_put(K1, VClock(), b"1", "text/plain")
    r.apply_merge(K2, peer_version("peer", 1, b"p"))
    assert seen_a == seen_b == [K1, K2]


# --- corruption ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"\xc1", b"not msgpack at all \xff", encode_object(Object())[:-1] + b"\x91", b"\x92\x02\x90"],
)
def test_a_corrupt_object_is_absent_and_counted(storage: MemoryStorage, garbage: bytes) -> None:
    r = make(storage)
    storage.write([(Family.OBJECTS, K1, garbage)])
    assert r.read(K1).empty
    assert r.stats.corrupt_objects == 1
    assert r.read_encoded(K1) == garbage  # raw access still shows what is there

    calls: list[tuple[bytes, bytes | None, bytes | None]] = []
    r.listeners.append(lambda skey, old, new: calls.append((skey, old, new)))
    obj = r.apply_put(K1, VClock(), b"fresh", "text/plain")
    assert [s.value for s in obj.siblings] == [b"fresh"]
    assert r.read(K1) == obj
    assert r.stats.corrupt_objects == 2  # the put read the garbage once more
    assert calls == [(K1, garbage, encode_object(obj))]


def test_a_merge_over_a_corrupt_object_restores_it(storage: MemoryStorage) -> None:
    r = make(storage)
    storage.write([(Family.OBJECTS, K1, b"\xc1\xc1")])
    good = peer_version("peer", 1, b"good")
    result, changed = r.apply_merge(K1, good)
    assert changed and result == good and r.read(K1) == good
    assert r.stats.corrupt_objects == 1


def test_merge_encoded_stores_a_superseding_version_as_is(storage: MemoryStorage) -> None:
    r = make(storage)
    changes: list[tuple[bytes, bytes | None, bytes | None]] = []
    tombstoned: list[bytes] = []
    r.listeners.append(lambda k, old, new: changes.append((k, old, new)))
    r.tombstone_listeners.append(tombstoned.append)
    key = storage_key("k")
    assert not r.merge_encoded(key, encode_object(peer_version("p", 1, b"a")))  # nothing stored
    first = r.apply_put(key, VClock(), b"mine", "t")
    newer = update(first, first.context(), Dot("p", 1), b"theirs", "t", 1)
    data = encode_object(newer)
    assert r.merge_encoded(key, data)
    assert storage.get(Family.OBJECTS, key) == data and changes[-1][2] == data
    assert r.merge_encoded(key, data) and len(changes) == 2  # the same version again: no write
    # a version that has not seen the stored one is not this case: merged in full
    assert not r.merge_encoded(key, encode_object(peer_version("q", 1, b"x")))
    gone = update(newer, newer.context(), Dot("p", 2), None, "", 2)
    assert r.merge_encoded(key, encode_object(gone)) and tombstoned == [key]


def test_put_over_one_covered_version_counts_past_its_clock(storage: MemoryStorage) -> None:
    """The read-modify-write path reads the stored version's clock on the wire: the new
    dot must still be above every counter of this actor the stored version has seen."""
    r = make(storage)
    key = storage_key("rmw")
    seen_far = VClock({ACTOR: (50, 0)})  # a context naming a counter of ours from afar
    stored = update(Object(), seen_far, Dot("p", 1), b"peer", "t", 1)
    r.apply_merge(key, stored)
    new = r.apply_put(key, stored.context(), b"mine", "t")
    assert [s.dot for s in new.siblings] == [Dot(ACTOR, 51)]
    assert new.siblings[0].past == stored.context()
    again = r.apply_put(key, new.context(), b"again", "t")
    assert [s.dot for s in again.siblings] == [Dot(ACTOR, 52)]
    # a context that does not cover the stored version keeps it as a sibling
    blind = r.apply_put(key, VClock(), b"blind", "t")
    assert sorted(s.dot for s in blind.siblings) == [Dot(ACTOR, 52), Dot(ACTOR, 53)]


# --- dropping a partition ------------------------------------------------------------------


def test_drop_partition_deletes_that_partition_only(storage: MemoryStorage) -> None:
    q, p = 8, 3
    r = make(storage)
    by_partition: dict[int, list[bytes]] = {i: [] for i in range(q)}
    for i in range(400):
        key = f"key{i}"
        skey = storage_key(key)
        by_partition[partition_of(key_hash(key.encode()), q)].append(skey)
        r.apply_put(skey, VClock(), b"v", "text/plain")
    assert all(by_partition[i] for i in (p - 1, p, p + 1))

    def held(i: int) -> int:
        return len(storage.scan(Family.OBJECTS, *partition_keys(i, q)))

    assert r.drop_partition(p, q)
    assert held(p) == 0 and all(r.read_encoded(k) is None for k in by_partition[p])
    for i in range(q):
        if i != p:  # the neighbours (and the rest) untouched
            assert held(i) == len(by_partition[i]), i
    assert storage.get(Family.META, COUNTER_KEY) is not None
    assert not r.drop_partition(p, q)  # empty now: nothing to drop
