"""Binary encodings of versioned objects (pure; msgpack).

Stored object layout (format 1):  [1, [sibling, ...]] where a sibling is
    [actor, counter, timestamp_ms, past, pruned, value | nil, content_type]
and `past` is a flat list [actor, counter, ts, actor, counter, ts, ...].
Decoding validates shape and types and raises `CodecError` (never anything else) on
garbage, so a corrupted record or a hostile peer cannot crash a node.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import msgpack

from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, Sibling

FORMAT = 1

_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer (bin type on): packb builds and frees a Packer and its
    buffer on every call."""
    try:
        return _local.packer  # type: ignore[no-any-return]
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
        return packer


def pack(obj: Any) -> bytes:
    """msgpack bytes of `obj` (bin type on), with one reused Packer per thread (the
    lookup is inlined: this is called several times per request)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _packer()
    return packer.pack(obj)  # type: ignore[no-any-return]


def pack_array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` items (their encodings follow it)."""
    return _packer().pack_array_header(n)  # type: ignore[no-any-return]


class CodecError(ValueError):
    """Bytes that are not a valid encoding."""


def clock_to_wire(clock: VClock) -> list[Any]:
    flat: list[Any] = []
    for actor, counter, ts in clock.items():  # sorted by actor: equal clocks, equal bytes
        flat += (actor, counter, ts)
    return flat


def clock_from_wire(flat: Any, pruned: bool = False) -> VClock:
    if not isinstance(flat, list) or len(flat) % 3:
        raise CodecError("clock must be a flat list of (actor, counter, ts) triples")
    entries: dict[str, tuple[int, int]] = {}
    previous = ""
    ordered = True
    for i in range(0, len(flat), 3):
        actor, counter, ts = flat[i], flat[i + 1], flat[i + 2]
        if not isinstance(actor, str) or not actor:
            raise CodecError("clock actor must be a non-empty string")
        if type(counter) is not int or type(ts) is not int or counter < 1 or ts < 0:
            raise CodecError("clock counter and timestamp must be non-negative integers")
        if actor in entries:
            raise CodecError("duplicate actor in clock")
        entries[actor] = (counter, ts)
        ordered = ordered and actor > previous
        previous = actor
    if ordered:  # what clock_to_wire writes: no need to sort again
        return VClock._sorted(entries, bool(pruned))
    return VClock(entries, pruned=bool(pruned))


def sibling_to_wire(s: Sibling) -> list[Any]:
    return [
        s.dot.actor,
        s.dot.counter,
        s.timestamp_ms,
        clock_to_wire(s.past),
        s.past.pruned,
        s.value,
        s.content_type,
    ]


def sibling_from_wire(raw: Any) -> Sibling:
    if not isinstance(raw, list) or len(raw) != 7:
        raise CodecError("sibling must be a 7-element list")
    actor, counter, ts, past, pruned, value, ctype = raw
    if not isinstance(actor, str) or not actor or type(counter) is not int or counter < 1:
        raise CodecError("bad sibling dot")
    if type(ts) is not int or ts < 0:
        raise CodecError("bad sibling timestamp")
    if value is not None and not isinstance(value, bytes):
        raise CodecError("sibling value must be bytes or nil")
    if not isinstance(ctype, str) or not isinstance(pruned, bool):
        raise CodecError("bad sibling content type or pruned flag")
    return Sibling(Dot(actor, counter), clock_from_wire(past, pruned), value, ctype, ts)


def object_to_wire(obj: Object) -> list[Any]:
    return [FORMAT, [sibling_to_wire(s) for s in obj.siblings]]


def object_from_wire(raw: Any) -> Object:
    if not isinstance(raw, list) or len(raw) != 2 or raw[0] != FORMAT:
        raise CodecError("unknown object format")
    if not isinstance(raw[1], list):
        raise CodecError("siblings must be a list")
    if len(raw[1]) == 1:  # the common case: nothing to deduplicate or order
        return Object((sibling_from_wire(raw[1][0]),))
    return Object.of(sibling_from_wire(s) for s in raw[1])


def encode_object(obj: Object) -> bytes:
    """The canonical encoding (computed once per object: a write stores it and sends the
    same bytes to the other replicas)."""
    cached = obj.wire_cache
    if cached is None:
        cached = pack(object_to_wire(obj))
        object.__setattr__(obj, "wire_cache", cached)
    return cached


def decode_object(data: bytes) -> Object:
    """The object in `data`, which stays its encoding (storage and peers hold only the
    canonical encodings this module writes)."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"undecodable object: {exc}") from None
    obj = object_from_wire(raw)
    object.__setattr__(obj, "wire_cache", data)
    return obj


def _wire_siblings(data: bytes) -> list[Any] | None:
    """The sibling list of an encoded object, unchecked beyond the outer layout (None
    when that is not an object's)."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(raw, list) or len(raw) != 2 or raw[0] != FORMAT:
        return None
    siblings = raw[1]
    return siblings if isinstance(siblings, list) else None


def single_version(data: bytes) -> list[Any] | None:
    """The one sibling of an encoded object, in its wire form (shape-checked), or None
    when it holds none, several, or is not a valid encoding."""
    siblings = _wire_siblings(data)
    if siblings is None or len(siblings) != 1:
        return None
    s = siblings[0]
    if not isinstance(s, list) or len(s) != 7:
        return None
    actor, counter, ts, past, pruned, value, ctype = s
    if not isinstance(actor, str) or not actor or type(counter) is not int or counter < 1:
        return None
    if type(ts) is not int or ts < 0 or not isinstance(pruned, bool):
        return None
    if not isinstance(past, list) or len(past) % 3 or not isinstance(ctype, str):
        return None
    if value is not None and not isinstance(value, bytes):
        return None
    return s


def _past_counter(past: list[Any], actor: str) -> int:
    """`actor`'s counter in a flat wire clock (0 when absent or not an integer)."""
    for i in range(0, len(past), 3):
        if past[i] == actor:
            seen = past[i + 1]
            return seen if type(seen) is int else 0
    return 0


def version_counter(sibling: list[Any], actor: str) -> int:
    """The highest counter of `actor` a wire sibling has seen (its dot or its past):
    what `Object.context().counter(actor)` gives for an object of that one version."""
    own: int = sibling[1] if sibling[0] == actor else 0
    return max(own, _past_counter(sibling[3], actor))


def supersedes(incoming: bytes, stored: bytes) -> list[Any] | None:
    """The common case of replication, decided on the wire without building objects:
    when both encodings hold one version each and the incoming version has seen the
    stored one but not the other way round, merging them gives `incoming` as it is
    (as `versions.sync` would) and its sibling is returned; else None (merge in full)."""
    new = single_version(incoming)
    if new is None:
        return None
    old = single_version(stored)
    if old is None or (old[0], old[1]) == (new[0], new[1]):
        return None
    new_saw_old = _past_counter(new[3], old[0]) >= old[1]
    if new_saw_old and _past_counter(old[3], new[0]) < new[1]:
        return new
    return None


def all_tombstones(data: bytes) -> bool:
    """Whether an encoded object holds siblings and all of them are tombstones, read on
    the wire (as `decode_object(data).all_tombstones()`, without building the object);
    False for anything that is not a valid encoding."""
    siblings = _wire_siblings(data)
    if not siblings:
        return False
    return all(isinstance(s, list) and len(s) == 7 and s[5] is None for s in siblings)


def digest(data: bytes) -> bytes:
    """The anti-entropy digest of an encoded object (stable across replicas because the
    encoding is canonical: siblings are sorted by dot)."""
    return hashlib.blake2b(data, digest_size=16).digest()
