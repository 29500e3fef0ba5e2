"""Tests for dynamo_node.core.context: the opaque, MAC'd causal context handed to clients."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dynamo_node.core.context import (
    DEFAULT_KEY,
    MAC_BYTES,
    MAX_CONTEXT_CHARS,
    OLD_VERSION,
    TAG_BYTES,
    VERSION,
    ContextCodec,
)
from dynamo_node.core.errors import InvalidContext, InvalidRequest
from dynamo_node.core.vclock import VClock
from dynamo_node.store.storage import storage_key

#: the storage key the contexts of these tests are issued for
SKEY = storage_key("k")

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

actor_st = st.text(min_size=1, max_size=10)
clock_st = st.builds(
    VClock,
    st.dictionaries(
        actor_st,
        st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1)),
        max_size=8,
    ),
    pruned=st.booleans(),
)
secret_st = st.one_of(st.just(""), st.text(min_size=1, max_size=20))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(payload: bytes, key: bytes = DEFAULT_KEY) -> str:
    """A context with a valid MAC over an arbitrary payload (as a peer with the key could)."""
    mac = hashlib.blake2b(payload, key=key, digest_size=MAC_BYTES).digest()
    return b64(payload + mac)


def tag(skey: bytes = SKEY, key: bytes = DEFAULT_KEY) -> bytes:
    """The key tag a context for `skey` carries (after the version byte)."""
    return hashlib.blake2b(b"\x00key" + skey, key=key, digest_size=MAC_BYTES).digest()[:TAG_BYTES]


#: what a valid context for SKEY starts with
HEAD = VERSION + tag()


def only_invalid_context(codec: ContextCodec, text: str | None) -> VClock | None:
    try:
        clock = codec.decode(text, SKEY)
    except InvalidContext as exc:
        assert isinstance(exc, InvalidRequest)
        assert exc.status == 400
        return None
    assert isinstance(clock, VClock)
    return clock


# --- round trip ------------------------------------------------------------------------------


@given(clock_st, secret_st)
def test_round_trip(clock: VClock, secret: str) -> None:
    codec = ContextCodec(secret)
    text = codec.encode(clock, SKEY)
    assert isinstance(text, str)
    assert set(text) <= set(ALPHABET)  # URL- and header-safe, no padding
    back = codec.decode(text, SKEY)
    assert back == clock
    assert list(back.items()) == list(clock.items())
    assert back.pruned == clock.pruned
    # surrounding whitespace (as from a header) is tolerated
    assert codec.decode(f"  {text}\t", SKEY) == clock


@given(clock_st)
def test_encoding_is_deterministic(clock: VClock) -> None:
    assert ContextCodec("s").encode(clock, SKEY) == ContextCodec("s").encode(clock, SKEY)


@pytest.mark.parametrize("text", [None, "", " ", "\t\n", "   \r\n"])
def test_absent_or_empty_is_the_empty_clock(text: str | None) -> None:
    clock = ContextCodec().decode(text, SKEY)
    assert clock == VClock()
    assert len(clock) == 0
    assert not clock.pruned


def test_empty_clock_round_trips_to_a_non_empty_string() -> None:
    codec = ContextCodec()
    text = codec.encode(VClock(), SKEY)
    assert text
    assert codec.decode(text, SKEY) == VClock()
    assert codec.decode(codec.encode(VClock(pruned=True), SKEY), SKEY).pruned


# --- fuzzing --------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200), secret_st)
@example("A", "")
@example("====", "")
@example("AQ", "")
@example("é", "")
@example("\x00", "")
def test_arbitrary_text_only_invalid_context(text: str, secret: str) -> None:
    codec = ContextCodec(secret)
    clock = only_invalid_context(codec, text)
    if text.strip():
        assert clock is None  # a MAC collision on random text is out of the question


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=ALPHABET + "=", max_size=120))
def test_arbitrary_base64_alphabet_text_only_invalid_context(text: str) -> None:
    assert only_invalid_context(ContextCodec(), text) is None or not text.strip("=")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), secret_st)
@example(b"", "")
@example(VERSION, "")
@example(VERSION + b"\x00" * MAC_BYTES, "")
def test_arbitrary_bytes_only_invalid_context(data: bytes, secret: str) -> None:
    text = b64(data)
    clock = only_invalid_context(ContextCodec(secret), text)
    if text:
        assert clock is None


structures = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(),
        st.text(max_size=6),
        st.binary(max_size=6),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=7),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), children, max_size=3),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(structures)
@example([["a", 1, 0], False])
@example([["a", 1, 0, "a", 2, 0], False])
@example([["a", 0, 0], False])
@example([["a", 1], False])
@example([["a", 1, 0]])
@example({"a": 1, "b": 2})
@example("ab")
@example(b"ab")
@example([["a", 1, 0], False, "extra"])
def test_validly_signed_garbage_only_invalid_context(value: Any) -> None:
    """Past the MAC (a peer that knows the key, or a bug): the payload is still checked."""
    payload = HEAD + msgpack.packb(value, use_bin_type=True)
    only_invalid_context(ContextCodec(), signed(payload))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_validly_signed_random_bytes_only_invalid_context(body: bytes) -> None:
    only_invalid_context(ContextCodec(), signed(HEAD + body))
    only_invalid_context(ContextCodec(), signed(b"\x03" + body))


def test_validly_signed_unknown_version_rejected() -> None:
    payload = b"\x03" + msgpack.packb([[], False])
    with pytest.raises(InvalidContext):
        ContextCodec().decode(signed(payload), SKEY)


@pytest.mark.parametrize(
    "value",
    [
        [["a", 1, 0, "a", 2, 0], False],  # duplicate actor
        [["a", 0, 0], False],  # counter 0
        [["a", 1], False],  # not triples
        [["", 1, 0], False],  # empty actor
        [[1, 1, 0], False],  # int actor
        [["a", 1, -1], False],  # negative ts
        [["a", True, 0], False],  # bool counter
        {"a": 1, "b": 2},  # a map of two keys unpacks into two names
        [["a", 1, 0]],  # one element
        [["a", 1, 0], False, None],  # three elements
        None,
        7,
    ],
)
def test_validly_signed_malformed_clock_rejected(value: Any) -> None:
    with pytest.raises(InvalidContext):
        ContextCodec().decode(signed(HEAD + msgpack.packb(value, use_bin_type=True)), SKEY)


def test_validly_signed_trailing_bytes_rejected() -> None:
    payload = HEAD + msgpack.packb([["a", 1, 0], False]) + b"\x00"
    with pytest.raises(InvalidContext):
        ContextCodec().decode(signed(payload), SKEY)


# --- tampering --------------------------------------------------------------------------------


sample_clock = VClock({"node-1": (3, 1_700_000_000_000), "node-2": (9, 1_700_000_000_500)})


@settings(max_examples=300, deadline=None)
@given(clock_st, secret_st, st.data())
def test_one_flipped_character_is_rejected(clock: VClock, secret: str, data: st.DataObject) -> None:
    """Replace any one character of a context with a different base64url character."""
    codec = ContextCodec(secret)
    text = codec.encode(clock, SKEY)
    last = len(text) - 1
    i = data.draw(st.one_of(st.just(last), st.integers(0, last)), label="position")
    c = data.draw(st.sampled_from(ALPHABET.replace(text[i], "")), label="replacement")
    tampered = text[:i] + c + text[i + 1 :]
    with pytest.raises(InvalidContext):
        codec.decode(tampered, SKEY)


def test_flipping_the_last_character_is_rejected() -> None:
    """Minimal counterexample: base64url without padding leaves unused low bits in the
    last character when len(text) % 4 != 0; the lenient decoder ignores them, so a
    context with its last character changed is accepted (decoding to the same clock)."""
    codec = ContextCodec()
    # an actor name of the length that leaves the last character with unused bits
    texts = [codec.encode(VClock({"a" * size: (1, 0)}), SKEY) for size in (1, 2, 3)]
    text = next(t for t in texts if len(t) % 4 != 0)
    assert len(text) % 4 != 0  # the last character carries unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for other in alphabet:
        if other != text[-1]:
            with pytest.raises(InvalidContext):
                codec.decode(text[:-1] + other, SKEY)


@settings(max_examples=300, deadline=None)
@given(clock_st, st.data())
def test_one_flipped_bit_in_the_payload_is_rejected(clock: VClock, data: st.DataObject) -> None:
    codec = ContextCodec()
    raw = bytearray(unb64(codec.encode(clock, SKEY)))
    i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(InvalidContext):
        codec.decode(b64(bytes(raw)), SKEY)


@settings(max_examples=200, deadline=None)
@given(clock_st, st.data())
def test_any_other_character_never_yields_a_different_clock(
    clock: VClock, data: st.DataObject
) -> None:
    """Replacing one character with *any* character is rejected or decodes to the very
    same clock (never to a different one)."""
    codec = ContextCodec()
    text = codec.encode(clock, SKEY)
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    c = data.draw(st.characters())
    back = only_invalid_context(codec, text[:i] + c + text[i + 1 :])
    if back is not None:
        assert list(back.items()) == list(clock.items())
        assert back.pruned == clock.pruned


def test_truncated_and_extended_contexts_rejected() -> None:
    codec = ContextCodec()
    text = codec.encode(sample_clock, SKEY)
    for cut in range(1, len(text)):
        with pytest.raises(InvalidContext):
            codec.decode(text[:cut], SKEY)
    for extra in ("A", "AA", "AAAA", text):
        with pytest.raises(InvalidContext):
            codec.decode(text + extra, SKEY)


@given(clock_st, st.text(min_size=1, max_size=20), st.text(max_size=20))
def test_context_signed_with_another_secret_rejected(
    clock: VClock, secret: str, other: str
) -> None:
    if other == secret:
        return
    text = ContextCodec(secret).encode(clock, SKEY)
    with pytest.raises(InvalidContext):
        ContextCodec(other).decode(text, SKEY)


def test_default_key_and_cluster_secret_are_distinct() -> None:
    text = ContextCodec().encode(sample_clock, SKEY)
    with pytest.raises(InvalidContext):
        ContextCodec("cluster-token").decode(text, SKEY)
    assert ContextCodec(DEFAULT_KEY.decode()).decode(text, SKEY) == sample_clock


def test_forged_clock_without_the_key_rejected() -> None:
    """Re-encoding a different clock with a MAC under a guessed key does not verify."""
    payload = HEAD + msgpack.packb([["node-1", 1_000_000, 0], False])
    with pytest.raises(InvalidContext):
        ContextCodec("secret").decode(signed(payload), SKEY)
    with pytest.raises(InvalidContext):
        ContextCodec("secret").decode(b64(payload + b"\x00" * MAC_BYTES), SKEY)


# --- length limits ---------------------------------------------------------------------------


def test_over_long_context_rejected() -> None:
    codec = ContextCodec()
    with pytest.raises(InvalidContext, match="too long"):
        codec.decode("A" * (MAX_CONTEXT_CHARS + 1), SKEY)
    with pytest.raises(InvalidContext):
        codec.decode("A" * (10 * MAX_CONTEXT_CHARS), SKEY)


def test_over_long_but_validly_signed_context_rejected() -> None:
    big = VClock({f"actor-{i:05d}": (i + 1, i) for i in range(2_000)})
    codec = ContextCodec()
    text = codec.encode(big, SKEY)
    assert len(text) > MAX_CONTEXT_CHARS
    with pytest.raises(InvalidContext, match="too long"):
        codec.decode(text, SKEY)


def test_context_at_the_limit_is_measured_after_stripping() -> None:
    codec = ContextCodec()
    text = codec.encode(sample_clock, SKEY)
    padded = " " * MAX_CONTEXT_CHARS + text + " " * MAX_CONTEXT_CHARS
    assert codec.decode(padded, SKEY) == sample_clock


# --- binding to the key ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(clock_st, secret_st, st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_a_context_is_valid_only_for_the_key_it_was_issued_for(
    clock: VClock, secret: str, key: str, other: str
) -> None:
    """A context of one key presented with another would supersede versions its writer
    never saw (data loss): it is refused with a message that says why."""
    codec = ContextCodec(secret)
    text = codec.encode(clock, storage_key(key))
    assert codec.decode(text, storage_key(key)) == clock
    if other != key:
        with pytest.raises(InvalidContext, match="issued for another key"):
            codec.decode(text, storage_key(other))


def test_the_binding_is_to_the_storage_key_bytes() -> None:
    """Bound to the bytes of the storage key (so a bucket in it is bound too)."""
    codec = ContextCodec()
    text = codec.encode(sample_clock, b"\x00" * 8 + b"bucket-a/k")
    with pytest.raises(InvalidContext, match="another key"):
        codec.decode(text, b"\x00" * 8 + b"bucket-b/k")
    assert codec.decode(text, b"\x00" * 8 + b"bucket-a/k") == sample_clock


def test_an_empty_context_is_the_empty_clock_for_any_key() -> None:
    codec = ContextCodec()
    assert codec.decode(None, storage_key("a")) == VClock()
    assert codec.decode("", storage_key("b")) == VClock()


def test_an_unbound_context_of_an_earlier_release_is_refused() -> None:
    payload = OLD_VERSION + msgpack.packb([["a", 1, 0], False])
    with pytest.raises(InvalidContext, match="earlier release"):
        ContextCodec().decode(signed(payload), SKEY)


def test_the_key_tag_is_keyed_by_the_secret() -> None:
    """The tag does not reveal the key to anyone without the secret: it is a MAC too."""
    assert (
        unb64(ContextCodec("a").encode(sample_clock, SKEY))[1 : 1 + TAG_BYTES]
        != unb64(ContextCodec("b").encode(sample_clock, SKEY))[1 : 1 + TAG_BYTES]
    )
