"""Tests for dynamo_node.core.codec: round trips, canonical bytes, and fuzzing the decoder."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_node.core.codec import (
    FORMAT,
    CodecError,
    all_tombstones,
    clock_from_wire,
    clock_to_wire,
    decode_object,
    digest,
    encode_object,
    object_from_wire,
    object_to_wire,
    supersedes,
)
from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, Sibling, sync

# msgpack carries unsigned integers up to 2**64 - 1
U64 = 2**64 - 1

actor_st = st.text(min_size=1, max_size=12)
counter_st = st.one_of(st.integers(min_value=1, max_value=1_000), st.integers(1, U64))
ts_st = st.one_of(st.integers(min_value=0, max_value=2_000_000_000_000), st.integers(0, U64))


@st.composite
def clock_st(draw: st.DrawFn) -> VClock:
    entries = draw(st.dictionaries(actor_st, st.tuples(counter_st, ts_st), max_size=6))
    return VClock(entries, pruned=draw(st.booleans()))


@st.composite
def sibling_st(draw: st.DrawFn) -> Sibling:
    return Sibling(
        Dot(draw(actor_st), draw(counter_st)),
        draw(clock_st()),
        draw(st.one_of(st.none(), st.binary(max_size=64))),
        draw(st.text(max_size=30)),
        draw(ts_st),
    )


siblings_st = st.lists(sibling_st(), max_size=6)
objects_st = siblings_st.map(Object.of)


def deep(obj: Object) -> list[tuple[Any, ...]]:
    """Everything a sibling carries, including what == ignores (timestamps, pruned)."""
    return [
        (
            s.dot,
            list(s.past.items()),
            s.past.pruned,
            s.value,
            s.content_type,
            s.timestamp_ms,
        )
        for s in obj.siblings
    ]


# --- round trip ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(objects_st)
def test_round_trip(obj: Object) -> None:
    data = encode_object(obj)
    assert isinstance(data, bytes)
    back = decode_object(data)
    assert back == obj
    assert deep(back) == deep(obj)
    assert encode_object(back) == data


@settings(deadline=None)
@given(objects_st)
def test_wire_round_trip(obj: Object) -> None:
    wire = object_to_wire(obj)
    assert wire[0] == FORMAT
    assert deep(object_from_wire(wire)) == deep(obj)


@settings(deadline=None)
@given(clock_st())
def test_clock_round_trip(clock: VClock) -> None:
    back = clock_from_wire(clock_to_wire(clock), clock.pruned)
    assert list(back.items()) == list(clock.items())
    assert back.pruned == clock.pruned


def test_empty_object_round_trip() -> None:
    assert decode_object(encode_object(Object())) == Object()
    assert decode_object(encode_object(Object())).empty


def test_tombstone_and_empty_value_are_distinct() -> None:
    tomb = Object.of([Sibling(Dot("a", 1), VClock(), None, "", 0)])
    empty = Object.of([Sibling(Dot("a", 1), VClock(), b"", "", 0)])
    assert decode_object(encode_object(tomb)).siblings[0].tombstone
    assert not decode_object(encode_object(empty)).siblings[0].tombstone
    assert encode_object(tomb) != encode_object(empty)


# --- canonical -----------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    st.lists(sibling_st(), max_size=6, unique_by=lambda s: s.dot).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_encoding_is_canonical_in_sibling_order(lists: tuple[list[Sibling], list[Sibling]]) -> None:
    xs, shuffled = lists
    a, b = encode_object(Object.of(xs)), encode_object(Object.of(shuffled))
    assert a == b
    assert digest(a) == digest(b)


def test_encoding_is_canonical_in_clock_entry_order() -> None:
    one = Sibling(Dot("a", 1), VClock({"b": (1, 5), "c": (1, 5)}), b"v", "t", 0)
    two = Sibling(Dot("a", 1), VClock({"c": (1, 5), "b": (1, 5)}), b"v", "t", 0)
    assert one == two
    assert encode_object(Object.of([one])) == encode_object(Object.of([two]))


def test_merge_of_conflicting_copies_converges_to_the_same_bytes() -> None:
    one = Object.of([Sibling(Dot("a", 1), VClock({"b": (1, 5)}), b"v", "t", 0)])
    two = Object.of([Sibling(Dot("a", 1), VClock({"b": (1, 6)}), b"v", "t", 0)])
    assert encode_object(sync(one, two).obj) == encode_object(sync(two, one).obj)


@settings(deadline=None)
@given(objects_st, objects_st)
def test_digest_distinguishes_objects(a: Object, b: Object) -> None:
    ea, eb = encode_object(a), encode_object(b)
    assert (digest(ea) == digest(eb)) == (ea == eb)
    assert len(digest(ea)) == 16


def test_encoding_of_a_known_object() -> None:
    obj = Object.of([Sibling(Dot("n1", 2), VClock({"n0": (1, 5)}), b"v", "text/plain", 7)])
    raw = msgpack.unpackb(encode_object(obj), raw=False)
    assert raw == [1, [["n1", 2, 7, ["n0", 1, 5], False, b"v", "text/plain"]]]


# --- fuzzing the decoder -------------------------------------------------------------------------


def decode_only_codec_error(data: bytes) -> None:
    try:
        obj = decode_object(data)
    except CodecError:
        return
    # anything accepted is a well-formed object that re-encodes stably
    assert isinstance(obj, Object)
    assert decode_object(encode_object(obj)) == obj


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    decode_only_codec_error(data)


@settings(max_examples=200, deadline=None)
@given(objects_st.map(encode_object), st.data())
def test_decode_mutated_encodings(data: bytes, draw: st.DataObject) -> None:
    """Truncations, bit flips and splices of valid encodings."""
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(min_value=1, max_value=4))):
        kind = draw.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw.draw(st.integers(min_value=0, max_value=max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = draw.draw(st.binary(min_size=1, max_size=4))
        elif buf:
            del buf[pos]
    decode_only_codec_error(bytes(buf))


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=U64),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
structures = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.binary(max_size=4)), children, max_size=4
        ),
    ),
    max_leaves=20,
)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@settings(max_examples=200, deadline=None)
@given(structures)
def test_decode_arbitrary_msgpack_structures(value: Any) -> None:
    decode_only_codec_error(pack(value))


@settings(max_examples=200, deadline=None)
@given(st.lists(structures, max_size=4))
def test_decode_format_1_with_arbitrary_siblings(siblings: list[Any]) -> None:
    decode_only_codec_error(pack([FORMAT, siblings]))
    decode_only_codec_error(pack([FORMAT, [siblings]]))


# each field: a plausible value, an edge value, or a small arbitrary one
field_st: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["a", "", 1, 0, -1, U64, True, False, None, b"v", b"", [], 1.0]),
    leaves,
    st.lists(st.one_of(st.sampled_from(["a", "b", 1, 0, 2]), leaves), max_size=7),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(field_st, min_size=7, max_size=7))
def test_decode_seven_element_siblings(fields: list[Any]) -> None:
    decode_only_codec_error(pack([FORMAT, [fields]]))


@st.composite
def nearly_valid(draw: st.DrawFn) -> Any:
    """A valid wire form with one leaf (or one list) replaced by an arbitrary structure."""
    wire = object_to_wire(Object.of(draw(st.lists(sibling_st(), min_size=1, max_size=3))))
    paths: list[tuple[int, ...]] = []

    def walk(node: Any, path: tuple[int, ...]) -> None:
        paths.append(path)
        if isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, (*path, i))

    walk(wire, ())
    path = draw(st.sampled_from(paths[1:]))
    replacement: Any = draw(
        st.one_of(
            structures,
            st.sampled_from([0, -1, 2**64 - 1, True, False, None, "", b"", [], {}, 1.5]),
        )
    )
    node = wire
    for i in path[:-1]:
        node = node[i]
    node[path[-1]] = replacement
    return wire


@settings(max_examples=200, deadline=None)
@given(nearly_valid())
def test_decode_nearly_valid_structures(wire: Any) -> None:
    decode_only_codec_error(pack(wire))


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        [],
        [1],
        [2, []],
        [1, {}],
        [1, [None]],
        [1, [[]]],
        [1, [["a", 1, 0, [], False, b"v"]]],  # 6 fields
        [1, [["", 1, 0, [], False, b"v", "t"]]],  # empty actor
        [1, [["a", 0, 0, [], False, b"v", "t"]]],  # counter 0
        [1, [["a", True, 0, [], False, b"v", "t"]]],  # bool counter
        [1, [["a", 1, -1, [], False, b"v", "t"]]],  # negative timestamp
        [1, [["a", 1, 1.5, [], False, b"v", "t"]]],  # float timestamp
        [1, [["a", 1, 0, [], 0, b"v", "t"]]],  # pruned not bool
        [1, [["a", 1, 0, [], False, "v", "t"]]],  # str value
        [1, [["a", 1, 0, [], False, b"v", b"t"]]],  # bytes content type
        [1, [["a", 1, 0, ["b", 1], False, b"v", "t"]]],  # clock not triples
        [1, [["a", 1, 0, ["b", 1, 0, "b", 2, 0], False, b"v", "t"]]],  # duplicate actor
        [1, [["a", 1, 0, [1, 1, 0], False, b"v", "t"]]],  # int actor
        [1, [["a", 1, 0, ["b", 0, 0], False, b"v", "t"]]],  # clock counter 0
        [1, [["a", 1, 0, ["b", 1, -5], False, b"v", "t"]]],  # clock negative ts
        [1, [["a", 1, 0, {"b": 1}, False, b"v", "t"]]],  # dict clock
        [1, [["a", 1, 0, ["b", 1, 0], None, b"v", "t"]]],
        [1, [["a", 1, 0, [], False, b"v", "t"]], "extra"],
    ],
)
def test_decode_rejects_malformed(value: Any) -> None:
    with pytest.raises(CodecError):
        decode_object(pack(value))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # truncated array
        pack([1, []]) + b"\x00",  # trailing data
        b"\x92\x01\x91\x97\xa1a\x01\x00\x90\xc2\xc4\x01v\xa2\xff\xfe",  # invalid UTF-8 str
        b"\x81\x01\x01",  # map with an int key (strict_map_key)
        b"\xd4\x01\x00",  # ext type
        b"\xd6\xff\x00\x00\x00\x00",  # msgpack timestamp ext
        b"\x91" * 10_000 + b"\xc0",  # deeply nested arrays
        b"\xdd\xff\xff\xff\xff",  # array header claiming 4 billion elements
    ],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_object(data)


def test_decode_accepts_valid_minimal() -> None:
    obj = decode_object(pack([1, [["a", 1, 0, [], False, None, ""]]]))
    (s,) = obj.siblings
    assert s.tombstone
    assert s.dot == Dot("a", 1)


def test_decode_deduplicates_repeated_dots() -> None:
    sib = ["a", 1, 0, [], False, b"v", "t"]
    obj = decode_object(pack([1, [sib, sib]]))
    assert len(obj.siblings) == 1


# --- supersedes: the replication fast path decided on the wire --------------------------------
small_actor_st = st.sampled_from(["a", "b", "c"])


@st.composite
def related_sibling_st(draw: st.DrawFn) -> Sibling:
    """Versions over few actors and counters, so that pasts often cover other dots."""
    entries = draw(
        st.dictionaries(small_actor_st, st.tuples(st.integers(1, 4), st.just(0)), max_size=3)
    )
    return Sibling(
        Dot(draw(small_actor_st), draw(st.integers(1, 4))),
        VClock(entries, pruned=draw(st.booleans())),
        draw(st.one_of(st.none(), st.binary(max_size=8))),
        "t",
        draw(st.integers(0, 3)),
    )


@given(related_sibling_st(), related_sibling_st())
@settings(max_examples=500)
def test_supersedes_agrees_with_sync(stored: Sibling, incoming: Sibling) -> None:
    a, b = Object((stored,)), Object((incoming,))
    wire_b = encode_object(b)
    sibling = supersedes(wire_b, encode_object(a))
    if sibling is not None:
        # the fast path stores the incoming bytes as they are: exactly what sync gives
        assert encode_object(sync(a, b).obj) == wire_b
        assert (sibling[0], sibling[1], sibling[5]) == (*incoming.dot, incoming.value)
    elif incoming.dot != stored.dot:
        x_seen = incoming.past.covers(stored.dot)
        assert not x_seen or stored.past.covers(incoming.dot)


def test_supersedes_needs_one_version_on_each_side() -> None:
    old = Sibling(Dot("a", 1), VClock(), b"1", "t", 0)
    new = Sibling(Dot("a", 2), VClock({"a": (1, 0)}), b"2", "t", 1)
    other = Sibling(Dot("b", 1), VClock(), b"x", "t", 0)
    assert supersedes(encode_object(Object((new,))), encode_object(Object((old,)))) is not None
    assert supersedes(encode_object(Object((old,))), encode_object(Object((new,)))) is None
    two = encode_object(Object.of([old, other]))
    assert supersedes(encode_object(Object((new,))), two) is None
    assert supersedes(two, encode_object(Object((old,)))) is None
    for garbage in (b"", b"\xc1", msgpack.packb([FORMAT, [[1, 2, 3]]]), msgpack.packb({})):
        assert supersedes(garbage, encode_object(Object((old,)))) is None
        assert supersedes(encode_object(Object((new,))), garbage) is None


@given(objects_st)
def test_all_tombstones_on_the_wire_agrees_with_the_object(obj: Object) -> None:
    data = encode_object(obj)
    assert all_tombstones(data) == (not obj.empty and obj.all_tombstones())


@given(st.binary(max_size=200))
def test_all_tombstones_of_garbage_is_false(data: bytes) -> None:
    assert all_tombstones(data) in (False, True)  # never raises
    if all_tombstones(data):
        assert decode_object(data).all_tombstones()
