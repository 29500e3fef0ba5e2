"""Property tests for dynamo_node.core.ring: hashing, preference lists, claim, sloppy targets."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_node.core.ring import (
    HASH_BITS,
    Ring,
    claim,
    key_hash,
    partition_of,
    partition_range,
    transfers,
)

CLAIM_PARTITIONS = [8, 64, 256, 1024]
SMALL_PARTITIONS = [1, 2, 4, 8, 16, 64]


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None)


node_ids = st.text(alphabet="abnxyz019-.:", min_size=1, max_size=5)


@st.composite
def rings(draw: st.DrawFn, partitions: list[int] = SMALL_PARTITIONS, max_nodes: int = 8) -> Ring:
    """Any ring: owners drawn freely from a few ids, so counts may be unbalanced."""
    q = draw(st.sampled_from(partitions))
    pool = draw(st.lists(node_ids, min_size=1, max_size=max_nodes, unique=True))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    return Ring(draw(st.integers(0, 1000)), tuple(rng.choice(pool) for _ in range(q)))


@st.composite
def claimed_rings(draw: st.DrawFn, partitions: list[int] = CLAIM_PARTITIONS) -> Ring:
    """A ring as a cluster's history makes it: single node, then a few claims."""
    q = draw(st.sampled_from(partitions))
    ids = draw(st.lists(node_ids, min_size=1, max_size=14, unique=True))
    ring = Ring.single(ids[0], q)
    steps = draw(st.lists(st.lists(st.sampled_from(ids), min_size=1, unique=True), max_size=3))
    for members in steps:
        ring = claim(ring, members)
    return ring


def counts_of(ring: Ring) -> Counter[str]:
    return Counter(ring.owners)


def assert_balanced(ring: Ring, members: list[str]) -> None:
    counts = counts_of(ring)
    assert set(counts) <= set(members)
    per_member = [counts.get(m, 0) for m in members]
    assert max(per_member) - min(per_member) <= 1
    if len(members) <= ring.partitions:
        assert set(ring.nodes()) == set(members)
    else:
        assert len(ring.nodes()) == ring.partitions


def clumped_windows(ring: Ring) -> int:
    q, o = ring.partitions, ring.owners
    return sum(len({o[p], o[(p + 1) % q], o[(p + 2) % q]}) < 3 for p in range(q))


# -- hashing and partitions ---------------------------------------------------------


def test_key_hash_is_pinned() -> None:
    # if this changes, every stored key lands in another partition: never change it
    assert HASH_BITS == 64
    assert key_hash(b"hello") == 12085107955937391741


@given(st.binary(max_size=64))
@examples(50)
def test_key_hash_is_64_bit_blake2b(key: bytes) -> None:
    h = key_hash(key)
    assert 0 <= h < 2**64
    assert h == int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


@given(st.integers(0, 2**64 - 1), st.integers(0, 12))
@examples(100)
def test_a_hash_lies_in_the_range_of_its_partition(h: int, bits: int) -> None:
    q = 2**bits
    p = partition_of(h, q)
    assert 0 <= p < q
    start, end = partition_range(p, q)
    assert start <= h < end


@pytest.mark.parametrize("q", [2**b for b in range(11)])
def test_partition_ranges_tile_the_hash_space(q: int) -> None:
    ranges = [partition_range(p, q) for p in range(q)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 2**64
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert len({end - start for start, end in ranges}) == 1
    for p, (start, end) in enumerate(ranges):
        assert partition_of(start, q) == p == partition_of(end - 1, q)


@pytest.mark.parametrize("q", [0, -1, 3, 6, 100, 2**65])
def test_bad_partition_counts_are_rejected(q: int) -> None:
    with pytest.raises(ValueError):
        partition_of(0, q)
    with pytest.raises(ValueError):
        partition_range(0, q)


def test_out_of_range_hashes_and_partitions_are_rejected() -> None:
    for h in (-1, 2**64):
        with pytest.raises(ValueError):
            partition_of(h, 8)
    for p in (-1, 8):
        with pytest.raises(ValueError):
            partition_range(p, 8)
    assert partition_of(2**64 - 1, 1) == 0


# -- the ring -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "owners"),
    [
        (1, ()),
        (1, ("a", "b", "c")),
        (1, ("a", "")),
        (1, ("a", 3)),
        (-1, ("a",)),
        (True, ("a",)),
        ("1", ("a",)),
        (1, "ab"),
    ],
)
def test_bad_rings_are_rejected(version: object, owners: object) -> None:
    with pytest.raises(ValueError):
        Ring(version, owners)  # type: ignore[arg-type]


def test_single_and_queries() -> None:
    ring = Ring.single("a", 8)
    assert (ring.version, ring.partitions, ring.nodes()) == (1, 8, ("a",))
    assert ring.owned_by("a") == list(range(8))
    assert ring.owned_by("b") == []
    assert ring.owner(7) == "a"
    assert ring.with_version(9) == Ring(9, ("a",) * 8)
    with pytest.raises(ValueError):
        ring.owner(8)
    with pytest.raises(ValueError):
        Ring.single("a", 12)


def test_preference_list_example() -> None:
    ring = Ring(3, ("a", "a", "b", "a", "c", "b", "d", "d"))
    assert ring.preference_list(0, 3) == ["a", "b", "c"]
    assert ring.preference_list(6, 3) == ["d", "a", "b"]
    assert ring.walk(6) == ["d", "a", "b", "c"]
    assert ring.preference_list(1, 0) == []
    assert ring.preference_list(1, 9) == ["a", "b", "c", "d"]


@given(rings(), st.data())
@examples(150)
def test_preference_lists(ring: Ring, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, ring.partitions - 1))
    n = data.draw(st.integers(0, 10))
    prefs = ring.preference_list(p, n)
    walk = ring.walk(p)
    assert len(prefs) == min(n, len(ring.nodes()))
    assert len(set(prefs)) == len(prefs)
    assert prefs == walk[: len(prefs)]
    assert sorted(walk) == list(ring.nodes())
    if n:
        assert prefs[0] == ring.owner(p)
    # the walk is the owners from p onwards, each at its first sighting
    q = ring.partitions
    expected: list[str] = []
    for i in range(q):
        if ring.owners[(p + i) % q] not in expected:
            expected.append(ring.owners[(p + i) % q])
    assert walk == expected


@given(rings())
@examples(50)
def test_owned_by_partitions_the_ring(ring: Ring) -> None:
    owned = sorted(p for node in ring.nodes() for p in ring.owned_by(node))
    assert owned == list(range(ring.partitions))
    assert all(p in ring.owned_by(ring.owner(p)) for p in range(ring.partitions))


# -- serialization ------------------------------------------------------------------


@given(rings())
@examples(50)
def test_dict_round_trip(ring: Ring) -> None:
    d = ring.to_dict()
    assert d == {
        "version": ring.version,
        "partitions": ring.partitions,
        "owners": list(ring.owners),
    }
    assert Ring.from_dict(json.loads(json.dumps(d))) == ring


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "ring",
        {},
        {"version": 1, "partitions": 2},
        {"version": 1, "owners": ["a", "b"]},
        {"partitions": 2, "owners": ["a", "b"]},
        {"version": "1", "partitions": 2, "owners": ["a", "b"]},
        {"version": True, "partitions": 2, "owners": ["a", "b"]},
        {"version": -1, "partitions": 2, "owners": ["a", "b"]},
        {"version": 1, "partitions": 2.0, "owners": ["a", "b"]},
        {"version": 1, "partitions": 4, "owners": ["a", "b"]},
        {"version": 1, "partitions": 3, "owners": ["a", "b", "c"]},
        {"version": 1, "partitions": 0, "owners": []},
        {"version": 1, "partitions": 2, "owners": "ab"},
        {"version": 1, "partitions": 2, "owners": {"a": 1, "b": 2}},
        {"version": 1, "partitions": 2, "owners": ["a", ""]},
        {"version": 1, "partitions": 2, "owners": ["a", None]},
        {"version": 1, "partitions": 2, "owners": ["a", 7]},
    ],
)
def test_bad_dicts_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        Ring.from_dict(bad)


# -- claim --------------------------------------------------------------------------


@given(
    st.sampled_from(CLAIM_PARTITIONS),
    st.integers(0, 2**32),
    st.lists(node_ids, min_size=1, max_size=40, unique=True),
    st.data(),
)
@examples(60)
def test_claim_is_balanced_and_moves_the_minimum(
    q: int, seed: int, members: list[str], data: st.DataObject
) -> None:
    # start from any ring, sharing some nodes with the new member list
    old_pool = data.draw(st.lists(node_ids, min_size=1, max_size=12, unique=True))
    rng = random.Random(seed)
    old = Ring(5, tuple(rng.choice(old_pool) for _ in range(q)))
    new = claim(old, members)
    assert new.version == 6
    assert_balanced(new, members)

    before, after = counts_of(old), counts_of(new)
    moves = transfers(old, new)
    givers = {src for _, src, _ in moves}
    takers = {dst for _, _, dst in moves}
    for _, src, dst in moves:
        assert src not in members or before[src] > after[src]
        assert before[dst] < after[dst]
    assert not givers & takers
    # least-loaded first: nobody that took held more than a member that did not
    idle = [m for m in members if m not in takers]
    if takers and idle:
        assert max(before[m] for m in takers) <= min(before[m] for m in idle)
    # no balanced ring keeps more: the extra partition goes to the biggest holders
    ranked = sorted((before[m] for m in members), reverse=True)
    base, extra = divmod(q, len(members))
    most_kept = sum(min(c, base + (i < extra)) for i, c in enumerate(ranked))
    assert len(moves) == q - most_kept


@given(claimed_rings(), node_ids)
@examples(60)
def test_adding_a_node_moves_a_fair_share_all_to_it(ring: Ring, joiner: str) -> None:
    members = list(ring.nodes())
    if joiner in members:
        return
    new = claim(ring, [*members, joiner])
    moves = transfers(ring, new)
    assert len(moves) <= math.ceil(ring.partitions / (len(members) + 1))
    assert all(dst == joiner for _, _, dst in moves)
    assert_balanced(new, [*members, joiner])


@given(claimed_rings(), st.data())
@examples(60)
def test_removing_a_node_moves_only_its_partitions(ring: Ring, data: st.DataObject) -> None:
    members = list(ring.nodes())
    if len(members) < 2:
        return
    leaver = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != leaver]
    new = claim(ring, rest)
    moves = transfers(ring, new)
    assert [p for p, _, _ in moves] == ring.owned_by(leaver)
    assert all(src == leaver and dst in rest for _, src, dst in moves)
    assert_balanced(new, rest)


@given(claimed_rings(), st.lists(node_ids, min_size=1, max_size=20, unique=True), st.randoms())
@examples(40)
def test_claim_is_deterministic_whatever_the_order(
    ring: Ring, members: list[str], rnd: random.Random
) -> None:
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert claim(ring, members) == claim(ring, shuffled) == claim(ring, list(reversed(members)))


def test_claim_keeps_a_balanced_ring_with_the_same_nodes() -> None:
    ring = claim(Ring.single("a", 64), ["a", "b", "c"])
    assert claim(ring, ["c", "b", "a"]) == ring.with_version(ring.version + 1)


@pytest.mark.parametrize("bad", [[], ["a", "a"], ["a", ""], "abc", ["a", 1]])
def test_claim_rejects_bad_member_lists(bad: object) -> None:
    with pytest.raises(ValueError):
        claim(Ring.single("a", 8), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", range(3, 17))
def test_claim_spreads_a_fresh_cluster(size: int) -> None:
    members = [f"node-{i}" for i in range(size)]
    ring = claim(Ring.single(members[0], 256), members)
    assert clumped_windows(ring) <= 256 * 0.02


def test_claim_spreads_one_join_at_a_time() -> None:
    ring = Ring.single("node-0", 256)
    for size in range(2, 17):
        ring = claim(ring, [f"node-{i}" for i in range(size)])
        if size >= 4:
            assert clumped_windows(ring) == 0
        elif size == 3:
            assert clumped_windows(ring) <= 256 * 0.05


def test_more_nodes_than_partitions() -> None:
    members = [f"n{i}" for i in range(12)]
    ring = claim(Ring.single("n0", 8), members)
    assert len(ring.nodes()) == 8
    assert set(ring.nodes()) <= set(members)
    assert "n0" in ring.nodes()


# -- transfers ----------------------------------------------------------------------


@given(rings(partitions=[16]), rings(partitions=[16]))
@examples(50)
def test_transfers_turn_the_old_ring_into_the_new(old: Ring, new: Ring) -> None:
    moves = transfers(old, new)
    assert [p for p, _, _ in moves] == sorted({p for p, _, _ in moves})
    owners = list(old.owners)
    for p, src, dst in moves:
        assert owners[p] == src != dst
        owners[p] = dst
    assert tuple(owners) == new.owners


def test_transfers_need_equal_partition_counts() -> None:
    with pytest.raises(ValueError):
        transfers(Ring.single("a", 8), Ring.single("a", 16))
