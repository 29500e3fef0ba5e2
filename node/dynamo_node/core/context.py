"""The opaque causal context handed to clients (pure).

Wire form: base64url (no padding) of  b"\\x02" + tag[8] + msgpack(flat clock) + mac[8],
where mac is a keyed BLAKE2b (8 bytes) over everything before it, and tag a keyed
BLAKE2b (8 bytes) of the storage key the context was issued for: a context is bound to
its key (and, as the storage key includes it, to a bucket), so one presented with
another key is refused ("issued for another key") instead of superseding versions it
never saw. The MAC key is the cluster token when one is configured (a context is then
only valid within its cluster), else a fixed key that still catches corruption.
Anything that does not decode and verify is an `InvalidContext` (HTTP 400), never a
crash. Version 1 contexts (before keys were bound) are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgpack

from dynamo_node.core.codec import CodecError, clock_from_wire, clock_to_wire, pack
from dynamo_node.core.errors import InvalidContext
from dynamo_node.core.vclock import VClock

VERSION = b"\x02"
#: the unbound contexts of earlier releases: refused with their own message
OLD_VERSION = b"\x01"
MAC_BYTES = 8
TAG_BYTES = 8
#: domain separation of the key tag from the MAC (MAC inputs start with VERSION)
_TAG_DOMAIN = b"\x00key"
DEFAULT_KEY = b"dynamokv-context-v1"
MAX_CONTEXT_CHARS = 16 * 1024


class ContextCodec:
    def __init__(self, secret: str = "") -> None:
        key = secret.encode() if secret else DEFAULT_KEY
        # keyed BLAKE2b is a MAC by design (no HMAC construction needed) and fast; the
        # keyed state is set up once and copied per message
        self._keyed = hashlib.blake2b(key=key[:64], digest_size=MAC_BYTES)

    def _mac(self, payload: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(payload)
        return h.digest()

    def _tag(self, skey: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(_TAG_DOMAIN)
        h.update(skey)
        return h.digest()[:TAG_BYTES]

    def encode(self, clock: VClock, skey: bytes) -> str:
        """The context of `clock` for the key stored as `skey` (`storage.storage_key`)."""
        payload = VERSION + self._tag(skey) + pack([clock_to_wire(clock), clock.pruned])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, text: str | None, skey: bytes) -> VClock:
        """The clock of a context issued for `skey`. An absent or empty context is the
        empty clock (the put supersedes nothing)."""
        if text is None or not text.strip():
            return VClock()
        text = text.strip()
        if len(text) > MAX_CONTEXT_CHARS:
            raise InvalidContext("context too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidContext("context is not base64url") from None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
            # non-canonical base64 (e.g. altered padding bits): not a context we issued
            raise InvalidContext("context is not canonical base64url")
        if raw[:1] == OLD_VERSION:
            raise InvalidContext(
                "context from an earlier release (not bound to a key): read the key "
                "again and use the context of that read"
            )
        head = len(VERSION) + TAG_BYTES
        if len(raw) <= head + MAC_BYTES or raw[:1] != VERSION:
            raise InvalidContext("context has an unknown version or is truncated")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidContext("context failed verification (tampered or foreign)")
        if not hmac.compare_digest(payload[len(VERSION) : head], self._tag(skey)):
            raise InvalidContext(
                "this context was issued for another key: read this key and write "
                "back with the context of that read"
            )
        try:
            flat, pruned = msgpack.unpackb(payload[head:], raw=False)
            return clock_from_wire(flat, bool(pruned))
        except (CodecError, ValueError, TypeError) as exc:
            raise InvalidContext(f"context is malformed: {exc}") from None
        except Exception as exc:  # msgpack's own exception types
            raise InvalidContext(f"context is malformed: {exc}") from None
