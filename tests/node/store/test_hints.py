"""HintStore: durable hinted handoff over the storage interface."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dynamo_node.core.codec import decode_object, encode_object
from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, sync, update
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.hints import HintStore, hint_key, split_hint_key
from dynamo_node.store.storage import Family, MemoryStorage, storage_key


def version(
    actor: str, counter: int, value: bytes | None, base: Object | None = None, ts: int = 1000
) -> Object:
    """A put by `actor` with event `counter`; with `base`, it supersedes base's siblings."""
    context = base.context() if base is not None else VClock()
    return update(base or Object(), context, Dot(actor, counter), value, "text/plain", ts)


def values(obj: Object) -> set[bytes | None]:
    return {s.value for s in obj.siblings}


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def hints(storage: MemoryStorage) -> HintStore:
    return HintStore(storage, GroupCommit(storage, "wal", 60.0))


K1, K2 = storage_key("k1"), storage_key("k2")


def up(*nodes: str) -> Callable[[str], bool]:
    return lambda node: node in nodes


class Receiver:
    """A fake set of target nodes: records deliveries, acks according to `ack`."""

    def __init__(self, ack: Callable[[str, bytes], bool] = lambda t, k: True) -> None:
        self.ack = ack
        self.got: list[tuple[str, bytes, Object]] = []

    async def __call__(self, target: str, skey: bytes, encoded: bytes) -> bool:
        self.got.append((target, skey, decode_object(encoded)))
        return self.ack(target, skey)


def test_hint_key_round_trip() -> None:
    for skey in (K1, storage_key("ключ/🔑"), b"", b"\x00" * 8):
        for target in ("node-a", "10.0.0.1:7070", "ü"):
            assert split_hint_key(hint_key(skey, target)) == (skey, target)


def test_store_merges_for_the_same_key_and_target(hints: HintStore) -> None:
    a = version("x", 1, b"a")
    b = version("y", 1, b"b")  # concurrent with a
    hints.store(K1, "n2", a)
    assert hints.pending == 1
    hints.store(K1, "n2", b)
    assert hints.pending == 1  # merged, not a second hint
    assert values(hints.read(K1, "n2")) == {b"a", b"b"}
    # a version that supersedes both replaces them in the hint
    c = version("x", 2, b"c", base=sync(a, b).obj)
    hints.store(K1, "n2", c)
    assert values(hints.read(K1, "n2")) == {b"c"}
    assert hints.pending == 1
    # an older version changes nothing
    hints.store(K1, "n2", a)
    assert values(hints.read(K1, "n2")) == {b"c"}
    assert hints.stats.stored == 4


def test_pending_counts_key_target_pairs_and_for_key(hints: HintStore) -> None:
    assert hints.pending == 0
    assert hints.for_key(K1) == []
    hints.store(K1, "n2", version("x", 1, b"for-n2"))
    hints.store(K1, "n3", version("x", 1, b"for-n3"))
    hints.store(K2, "n2", version("x", 2, b"k2"))
    assert hints.pending == 3
    assert sorted(v for o in hints.for_key(K1) for v in values(o)) == [b"for-n2", b"for-n3"]
    assert [values(o) for o in hints.for_key(K2)] == [{b"k2"}]
    assert hints.for_key(storage_key("absent")) == []
    assert hints.targets() == {"n2", "n3"}


def test_for_key_does_not_mix_keys_sharing_a_prefix(hints: HintStore) -> None:
    short, long_ = b"\x01" * 8 + b"ab", b"\x01" * 8 + b"abc"
    hints.store(short, "n2", version("x", 1, b"short"))
    hints.store(long_, "n2", version("x", 2, b"long"))
    hints.store(short + b"\xff", "n2", version("x", 3, b"ff"))
    assert [values(o) for o in hints.for_key(short)] == [{b"short"}]
    assert [values(o) for o in hints.for_key(long_)] == [{b"long"}]


def test_hints_survive_a_restart(storage: MemoryStorage, hints: HintStore) -> None:
    hints.store(K1, "n2", version("x", 1, b"a"))
    hints.store(K1, "n3", version("x", 1, b"a"))
    hints.store(K2, "n2", version("x", 2, b"b"))
    again = HintStore(storage, GroupCommit(storage, "wal", 60.0))
    assert again.pending == 3
    assert values(again.read(K2, "n2")) == {b"b"}
    assert again.targets() == {"n2", "n3"}


async def test_durable_waits_for_the_group_commit(storage: MemoryStorage) -> None:
    gc = GroupCommit(storage, "sync", 60.0)
    gc.start()
    try:
        hints = HintStore(storage, gc)
        hints.store(K1, "n2", version("x", 1, b"a"))
        await hints.durable()
        assert storage.syncs >= 1
    finally:
        await gc.stop()


async def test_deliver_once_deletes_only_acknowledged_hints(hints: HintStore) -> None:
    hints.store(K1, "n2", version("x", 1, b"k1"))
    hints.store(K1, "n3", version("x", 1, b"k1"))
    hints.store(K2, "n2", version("x", 2, b"k2"))
    receiver = Receiver(ack=lambda target, skey: target == "n2")
    delivered = await hints.deliver_once(receiver, up("n2", "n3"))
    assert delivered == 2
    assert sorted((t, k) for t, k, _ in receiver.got) == sorted(
        [("n2", K1), ("n3", K1), ("n2", K2)]
    )
    for target, skey, obj in receiver.got:
        assert obj == hints.read(skey, target) or target == "n2"
    assert hints.pending == 1
    assert hints.read(K1, "n2").empty and hints.read(K2, "n2").empty
    assert values(hints.read(K1, "n3")) == {b"k1"}
    assert hints.targets() == {"n3"}
    assert hints.stats.delivered == 2 and hints.stats.failed == 1


async def test_deliver_once_sends_the_stored_version(hints: HintStore) -> None:
    obj = sync(version("x", 1, b"a"), version("y", 1, b"b")).obj
    hints.store(K1, "n2", obj)
    receiver = Receiver()
    assert await hints.deliver_once(receiver, up("n2")) == 1
    assert receiver.got == [("n2", K1, obj)]
    assert hints.pending == 0


async def test_deliver_once_skips_targets_that_are_down(hints: HintStore) -> None:
    hints.store(K1, "n2", version("x", 1, b"a"))
    hints.store(K1, "n3", version("x", 1, b"a"))
    receiver = Receiver()
    assert await hints.deliver_once(receiver, up("n3")) == 1
    assert [t for t, _, _ in receiver.got] == ["n3"]  # never called for a down target
    assert hints.pending == 1
    assert values(hints.read(K1, "n2")) == {b"a"}
    # later, n2 is back
    assert await hints.deliver_once(receiver, up("n2", "n3")) == 1
    assert hints.pending == 0


async def test_deliver_once_keeps_hints_whose_delivery_raises(hints: HintStore) -> None:
    hints.store(K1, "n2", version("x", 1, b"a"))
    hints.store(K2, "n2", version("x", 2, b"b"))
    calls: list[bytes] = []

    async def flaky(target: str, skey: bytes, encoded: bytes) -> bool:
        calls.append(skey)
        if skey == K1:
            raise ConnectionResetError("peer went away")
        return True

    assert await hints.deliver_once(flaky, up("n2")) == 1
    assert sorted(calls) == sorted([K1, K2])  # one failure does not stop the pass
    assert hints.pending == 1
    assert values(hints.read(K1, "n2")) == {b"a"}
    assert hints.read(K2, "n2").empty
    assert hints.stats.failed == 1


async def test_deliver_once_keeps_a_hint_that_changed_during_delivery(
    hints: HintStore,
) -> None:
    first = version("x", 1, b"old")
    newer = version("x", 2, b"new", base=first)
    hints.store(K1, "n2", first)
    sent: list[Object] = []

    async def deliver(target: str, skey: bytes, encoded: bytes) -> bool:
        sent.append(decode_object(encoded))
        if len(sent) == 1:
            hints.store(K1, "n2", newer)  # a new write for the same (key, target) lands
        return True

    await hints.deliver_once(deliver, up("n2"))
    assert sent[0] == first
    assert hints.read(K1, "n2") == newer  # the newer hint is kept for the next round
    assert hints.pending == 1
    await hints.deliver_once(deliver, up("n2"))
    assert sent[-1] == newer
    assert hints.pending == 0 and hints.read(K1, "n2").empty


async def test_deliver_once_pages_through_many_hints(hints: HintStore) -> None:
    keys = [storage_key(f"key-{i}") for i in range(23)]
    for i, k in enumerate(keys):
        hints.store(k, "n2", version("x", i + 1, b"v"))
        hints.store(k, "n3", version("x", i + 1, b"v"))
    receiver = Receiver(ack=lambda target, skey: target == "n3")
    assert await hints.deliver_once(receiver, up("n2", "n3"), batch=4) == 23
    assert len(receiver.got) == 46  # every hint offered exactly once
    assert len({(t, k) for t, k, _ in receiver.got}) == 46
    assert hints.pending == 23
    assert hints.targets() == {"n2"}
    receiver.ack = lambda target, skey: True
    assert await hints.deliver_once(receiver, up("n2", "n3"), batch=5) == 23
    assert hints.pending == 0


async def test_a_corrupt_hint_is_ignored_not_fatal(
    storage: MemoryStorage, hints: HintStore
) -> None:
    storage.write([(Family.HINTS, hint_key(K1, "n2"), b"\xc1 not msgpack")])
    assert hints.read(K1, "n2").empty
    hints.store(K1, "n2", version("x", 1, b"a"))  # replaces the garbage
    assert values(hints.read(K1, "n2")) == {b"a"}
    assert encode_object(hints.read(K1, "n2")) == storage.get(Family.HINTS, hint_key(K1, "n2"))
