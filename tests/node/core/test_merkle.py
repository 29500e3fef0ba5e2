"""Tests for dynamo_node.core.merkle: tree algebra, lazy recomputation, and the exchange."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_node.core.merkle import (
    EMPTY_HASH,
    MerkleTree,
    adiff_segments,
    diff_keys,
    diff_segments,
    item_digest,
)


def khash(key: str) -> bytes:
    """A storage key as the store builds it: 8-byte hash prefix + UTF-8 key."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    h = (0x3A << 56) | (h & ((1 << 56) - 1))  # pin the partition bits
    return h.to_bytes(8, "big") + key.encode()


def digest(value: str) -> bytes:
    return hashlib.blake2b(value.encode(), digest_size=16).digest()


def dataset(n: int, seed: int = 0) -> dict[bytes, bytes]:
    return {khash(f"key-{seed}-{i}"): digest(f"v{i}") for i in range(n)}


class CountingSource:
    """A remote tree behind a 'wire' that records every hash it sends."""

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        self.levels: list[int] = []

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        self.levels.append(level)
        return self.tree.hashes(level, indices)


class AsyncSource:
    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree

    async def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        return self.tree.hashes(level, indices)


keys_st = st.dictionaries(
    st.binary(min_size=1, max_size=24).map(lambda b: b"\x3a" * 8 + b),
    st.binary(max_size=16),
    max_size=60,
).map(lambda d: {k: item_digest(k, v) for k, v in d.items()})  # items as the store makes them
shapes = st.sampled_from([(1, 2), (8, 2), (64, 4), (1024, 16), (256, 16), (128, 8)])


# --- shape ----------------------------------------------------------------------------
def test_shape_of_default_tree() -> None:
    tree = MerkleTree()
    assert tree.shape == (1024, 16)
    assert tree.level_count == 4
    assert [tree.level_size(lv) for lv in range(4)] == [1, 4, 64, 1024]
    assert tree.children(0, 0) == range(0, 4)
    assert tree.children(1, 3) == range(48, 64)
    assert tree.children(2, 63) == range(1008, 1024)
    assert tree.children(3, 5) == range(0)


def test_single_segment_tree_is_its_own_root() -> None:
    tree = MerkleTree(segments=1, fanout=2)
    assert tree.level_count == 1
    tree.insert(b"k", b"d")
    assert tree.root() == tree.hashes(0, [0])[0] != EMPTY_HASH


@pytest.mark.parametrize(("segments", "fanout"), [(0, 16), (1000, 16), (1024, 1), (1024, 12)])
def test_rejects_bad_shapes(segments: int, fanout: int) -> None:
    with pytest.raises(ValueError):
        MerkleTree(segments, fanout)


def test_bad_indices_raise() -> None:
    tree = MerkleTree(64, 4)
    with pytest.raises(IndexError):
        tree.hashes(4, [0])
    with pytest.raises(IndexError):
        tree.hashes(1, [4])
    with pytest.raises(IndexError):
        tree.children(0, 1)


def test_segments_spread_keys_of_one_partition() -> None:
    tree = MerkleTree(prefix_bits=8)  # the test keys share their top 8 bits (a partition)
    segs = [tree.segment_of(k) for k in dataset(20_000)]
    counts = [segs.count(s) for s in range(tree.segments)]
    assert min(counts) > 0  # the shared high bits do not collapse keys into a few buckets
    assert max(counts) < 3 * 20_000 / tree.segments
    # without skipping the shared bits, they would
    assert len({MerkleTree().segment_of(k) for k in dataset(1000)}) == 4


def test_a_segment_is_one_key_range() -> None:
    """Storage keys sort by their hash, so a segment's keys are contiguous: listing the
    keys of a segment reads that range only."""
    tree = MerkleTree(256, 16, prefix_bits=8)
    keys = sorted(dataset(5000))
    segs = [tree.segment_of(k) for k in keys]
    assert segs == sorted(segs)
    base = 0x3A << 56  # the partition's first hash (test keys pin the top 8 bits)
    for k, seg in zip(keys, segs, strict=True):
        lo, hi = tree.segment_span(seg)
        assert base + lo <= int.from_bytes(k[:8]) < base + hi
    with pytest.raises(ValueError, match="prefix_bits"):
        MerkleTree(256, 16, prefix_bits=57)


def test_items_bind_the_key_and_the_version() -> None:
    a, b = khash("a"), khash("b")
    assert item_digest(a, b"v") != item_digest(b, b"v") != item_digest(b, b"w")
    assert item_digest(a, b"v") == item_digest(a, b"v")
    assert len(item_digest(a, b"v")) == 16
    # two keys of one segment holding the same version do not cancel out
    tree = MerkleTree(1, 2)
    tree.insert(a, item_digest(a, b"v"))
    tree.insert(b, item_digest(b, b"v"))
    assert tree.root() != EMPTY_HASH


# --- algebra ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(keys_st, shapes, st.randoms(use_true_random=False))
def test_root_is_independent_of_insertion_order(
    items: dict[bytes, bytes], shape: tuple[int, int], rnd: random.Random
) -> None:
    pairs = list(items.items())
    a = MerkleTree(*shape)
    for k, d in pairs:
        a.insert(k, d)
    rnd.shuffle(pairs)
    b = MerkleTree(*shape)
    for k, d in pairs:
        b.insert(k, d)
        b.root()  # interleaved reads must not change the outcome
    assert a.root() == b.root() == MerkleTree.build(pairs, *shape).root()
    assert (a.root() == EMPTY_HASH) == (not items)
    assert len(a) == len(items)


@settings(max_examples=60, deadline=None)
@given(keys_st, shapes)
def test_insert_then_remove_gives_the_empty_root(
    items: dict[bytes, bytes], shape: tuple[int, int]
) -> None:
    tree = MerkleTree(*shape)
    for k, d in items.items():
        tree.insert(k, d)
    for k, d in items.items():
        tree.remove(k, d)
    assert tree.root() == EMPTY_HASH == MerkleTree(*shape).root()
    assert len(tree) == 0
    assert all(h == EMPTY_HASH for h in tree.hashes(tree.leaf_level, range(tree.segments)))


@settings(max_examples=60, deadline=None)
@given(keys_st, st.data())
def test_update_equals_remove_then_insert(items: dict[bytes, bytes], data: st.DataObject) -> None:
    a, b = MerkleTree.build(items.items(), 64, 4), MerkleTree.build(items.items(), 64, 4)
    for k, old in items.items():
        new = data.draw(st.none() | st.binary(min_size=16, max_size=16))
        a.update(k, old, new)
        b.remove(k, old)
        if new is not None:
            b.insert(k, new)
        assert a.root() == b.root()
    fresh = b"\x3a" * 8 + b"fresh-key"
    a.update(fresh, None, b"x" * 16)
    b.insert(fresh, b"x" * 16)
    assert a.root() == b.root()


def test_empty_root_is_fixed_for_every_shape() -> None:
    assert MerkleTree().root() == MerkleTree(1, 2).root() == MerkleTree(4096, 8).root()
    assert bytes(16) == EMPTY_HASH


def test_removing_an_absent_key_is_caught_and_leaves_the_tree_unchanged() -> None:
    tree = MerkleTree(64, 4)
    k = khash("a")
    with pytest.raises(ValueError):
        tree.remove(k, digest("a"))
    tree.insert(k, digest("a"))
    before = tree.root()
    with pytest.raises(ValueError):
        tree.remove(k, digest("other"))  # last key of the segment, wrong digest
    assert tree.root() == before
    assert tree.segment_size(tree.segment_of(k)) == 1


@settings(max_examples=40, deadline=None)
@given(keys_st, shapes)
def test_a_tree_made_from_its_leaves_is_the_same_tree(
    items: dict[bytes, bytes], shape: tuple[int, int]
) -> None:
    """`from_leaves(leaf_state())`: a saved tree loads as the tree it was, every level."""
    tree = MerkleTree.build(items.items(), *shape)
    tree.root()
    leaves, counts = tree.leaf_state()
    loaded = MerkleTree.from_leaves(leaves, counts, *shape)
    assert loaded.leaf_state() == (leaves, counts) and len(loaded) == len(items)
    for level in range(tree.level_count):
        indices = list(range(tree.level_size(level)))
        assert loaded.hashes(level, indices) == tree.hashes(level, indices)


def test_leaves_no_store_could_produce_are_refused() -> None:
    tree = MerkleTree.build([(khash("a"), digest("a"))], 64, 4)
    leaves, counts = tree.leaf_state()
    with pytest.raises(ValueError):
        MerkleTree.from_leaves(leaves, counts, 128, 4)  # another shape
    with pytest.raises(ValueError):
        MerkleTree.from_leaves(leaves[:-1], counts, 64, 4)
    with pytest.raises(ValueError):  # a non-empty leaf counting no key
        MerkleTree.from_leaves(leaves, [0] * 64, 64, 4)
    with pytest.raises(ValueError):
        MerkleTree.from_leaves(leaves, [-1, *counts[1:]], 64, 4)


@settings(max_examples=60, deadline=None)
@given(keys_st, keys_st, shapes)
def test_set_segment_gives_the_tree_of_the_new_contents(
    before: dict[bytes, bytes], after: dict[bytes, bytes], shape: tuple[int, int]
) -> None:
    """Recomputing stale segments from the store (what anti-entropy does after writes)
    gives the same tree as a build from the new contents."""
    tree = MerkleTree.build(before.items(), *shape)
    tree.root()
    by_segment: dict[int, list[bytes]] = {}
    for k, item in after.items():
        by_segment.setdefault(tree.segment_of(k), []).append(item)
    for k in before:
        by_segment.setdefault(tree.segment_of(k), [])
    for segment, items in by_segment.items():
        tree.set_segment(segment, items)
    fresh = MerkleTree.build(after.items(), *shape)
    assert tree.root() == fresh.root() and len(tree) == len(fresh)
    for level in range(tree.level_count):
        indices = list(range(tree.level_size(level)))
        assert tree.hashes(level, indices) == fresh.hashes(level, indices)
    with pytest.raises(IndexError):
        tree.set_segment(tree.segments, [])


def test_digest_changes_change_the_root() -> None:
    tree = MerkleTree.build(dataset(100).items())
    before = tree.root()
    k, d = next(iter(dataset(100).items()))
    tree.update(k, d, digest("changed"))
    assert tree.root() != before
    tree.update(k, digest("changed"), d)
    assert tree.root() == before


# --- lazy recomputation ---------------------------------------------------------------
def test_lazy_recomputation_after_interleaved_updates() -> None:
    rnd = random.Random(7)
    live: dict[bytes, bytes] = {}
    tree = MerkleTree(256, 4)
    pool = [khash(f"k{i}") for i in range(400)]
    for step in range(3000):
        k = rnd.choice(pool)
        new = None if rnd.random() < 0.3 else digest(f"{step}")
        tree.update(k, live.get(k), new)
        if new is None:
            live.pop(k, None)
        else:
            live[k] = new
        if step % 97 == 0:
            level = rnd.randrange(tree.level_count)
            indices = list(range(tree.level_size(level)))
            assert tree.hashes(level, indices) == MerkleTree.build(live.items(), 256, 4).hashes(
                level, indices
            )
    assert tree.root() == MerkleTree.build(live.items(), 256, 4).root()
    assert len(tree) == len(live)


def test_one_update_dirties_only_its_path() -> None:
    tree = MerkleTree.build(dataset(5000).items(), 4096, 8)
    tree.root()
    assert tree.dirty_nodes == 0
    tree.insert(khash("new"), digest("new"))
    assert tree.dirty_nodes == tree.level_count - 1
    tree.insert(khash("new"), digest("new2"))  # same segment, same path: nothing new
    assert tree.dirty_nodes == tree.level_count - 1
    tree.root()
    assert tree.dirty_nodes == 0


# --- exchange -------------------------------------------------------------------------
def mutate(
    items: dict[bytes, bytes], d: int, seed: int = 1
) -> tuple[dict[bytes, bytes], set[bytes]]:
    """d differences of every kind: changed, dropped and added keys."""
    rnd = random.Random(seed)
    out = dict(items)
    changed: set[bytes] = set()
    for i, k in enumerate(rnd.sample(sorted(items), d)):
        if i % 3 == 0:
            del out[k]
            changed.add(k)
        elif i % 3 == 1:
            out[k] = digest(f"changed-{i}")
            changed.add(k)
        else:
            extra = khash(f"extra-{seed}-{i}")
            out[extra] = digest("extra")
            changed.add(extra)
    return out, changed


def test_identical_trees_cost_one_root_comparison() -> None:
    items = dataset(2000)
    local = MerkleTree.build(items.items())
    remote = CountingSource(MerkleTree.build(reversed(items.items())))
    segs, stats = diff_segments(local, remote)
    assert segs == []
    assert (stats.calls, stats.hashes_transferred) == (1, 1)
    assert remote.levels == [0]


@settings(max_examples=40, deadline=None)
@given(keys_st, keys_st, shapes)
def test_diff_finds_exactly_the_segments_of_differing_keys(
    a: dict[bytes, bytes], b: dict[bytes, bytes], shape: tuple[int, int]
) -> None:
    local, remote = MerkleTree.build(a.items(), *shape), MerkleTree.build(b.items(), *shape)
    segs, stats = diff_segments(local, CountingSource(remote))
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert segs == sorted({local.segment_of(k) for k in differing})
    assert stats.calls == (local.level_count if segs else 1)


def test_diff_then_diff_keys_recovers_the_differences() -> None:
    items = dataset(5000)
    other, changed = mutate(items, 30)
    local, remote = MerkleTree.build(items.items()), MerkleTree.build(other.items())
    segs, _ = diff_segments(local, remote)
    assert set(segs) == {local.segment_of(k) for k in changed}
    wanted = set(segs)
    mine = {k: d for k, d in items.items() if local.segment_of(k) in wanted}
    theirs = {k: d for k, d in other.items() if local.segment_of(k) in wanted}
    only_local, only_remote, differing = diff_keys(mine, theirs)
    assert set(only_local) == set(items) - set(other)
    assert set(only_remote) == set(other) - set(items)
    assert set(differing) == {k for k in items.keys() & other.keys() if items[k] != other[k]}
    assert set(only_local) | set(only_remote) | set(differing) == changed
    # Repairing the remote with what was found makes the roots equal.
    for k in only_local + differing:
        remote.update(k, other.get(k), items[k])
    for k in only_remote:
        remote.remove(k, other[k])
    assert remote.root() == local.root()


def test_diff_keys_is_sorted_and_disjoint() -> None:
    local = {b"b": b"1", b"a": b"1", b"c": b"1"}
    remote = {b"c": b"2", b"a": b"1", b"d": b"1"}
    assert diff_keys(local, remote) == ([b"b"], [b"d"], [b"c"])
    assert diff_keys({}, {}) == ([], [], [])


@pytest.fixture(scope="module")
def big() -> dict[bytes, bytes]:
    return dataset(50_000, seed=9)


def test_traffic_grows_with_differences_not_with_data(big: dict[bytes, bytes]) -> None:
    shape = (65536, 16)  # five levels: 1, 16, 256, 4096, 65536
    local = MerkleTree.build(big.items(), *shape, prefix_bits=8)
    transferred: dict[int, int] = {}
    for d in (10, 1000):
        other, _ = mutate(big, d)
        segs, stats = diff_segments(local, MerkleTree.build(other.items(), *shape, prefix_bits=8))
        assert 0 < len(segs) <= d
        assert stats.calls == local.level_count
        assert stats.hashes_transferred <= d * local.level_count * local.fanout + local.fanout
        transferred[d] = stats.hashes_transferred
    assert transferred[10] * 10 < transferred[1000]
    assert transferred[10] < 0.01 * len(big)
    # Same d on a tenth of the data: about the same traffic.
    small = dict(list(big.items())[:5000])
    small_other, _ = mutate(small, 10)
    _, small_stats = diff_segments(
        MerkleTree.build(small.items(), *shape, prefix_bits=8),
        MerkleTree.build(small_other.items(), *shape, prefix_bits=8),
    )
    assert abs(small_stats.hashes_transferred - transferred[10]) <= 4 * local.fanout


def test_diff_rejects_a_short_answer() -> None:
    class Short:
        def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
            return []

    with pytest.raises(ValueError):
        diff_segments(MerkleTree(), Short())


async def test_async_diff_matches_sync() -> None:
    items = dataset(3000)
    other, changed = mutate(items, 12)
    local, remote = MerkleTree.build(items.items()), MerkleTree.build(other.items())
    assert await adiff_segments(local, AsyncSource(remote)) == diff_segments(local, remote)
    segs, _ = await adiff_segments(local, AsyncSource(remote))
    assert set(segs) == {local.segment_of(k) for k in changed}
