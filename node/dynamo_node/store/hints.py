"""Hinted handoff: versions held for a replica that was unreachable (durable).

A fallback node stores a version it received in place of an intended replica in the
`hints` column family, keyed  len(skey) (2 bytes) + skey + target node id,  merged with
any hint already held for the same (key, target). `HintStore.deliver_once` sends hints
to their targets and deletes each only after the target acknowledged it, and only if
the hint did not change meanwhile (a newer hint is kept for the next round).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dynamo_node.core.codec import CodecError, decode_object, encode_object
from dynamo_node.core.versions import Object, sync
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.storage import Family, Op, Storage

log = logging.getLogger("dynamo.hints")

_LEN = struct.Struct(">H")

#: (target node, storage key, encoded object) -> acknowledged?
Deliver = Callable[[str, bytes, bytes], Awaitable[bool]]


def hint_key(skey: bytes, target: str) -> bytes:
    return _LEN.pack(len(skey)) + skey + target.encode()


def split_hint_key(hkey: bytes) -> tuple[bytes, str]:
    (size,) = _LEN.unpack_from(hkey)
    return hkey[2 : 2 + size], hkey[2 + size :].decode()


@dataclass(slots=True)
class HintStats:
    stored: int = 0
    delivered: int = 0
    failed: int = 0


class HintStore:
    def __init__(self, storage: Storage, commit: GroupCommit, *, lww: bool = False) -> None:
        self.storage = storage
        self.commit = commit
        self.lww = lww
        self.stats = HintStats()
        self._pending = sum(1 for _ in storage.iter_range(Family.HINTS))

    @property
    def pending(self) -> int:
        return self._pending

    def read(self, skey: bytes, target: str) -> Object:
        raw = self.storage.get(Family.HINTS, hint_key(skey, target))
        return _decode(raw)

    def for_key(self, skey: bytes) -> list[Object]:
        prefix = _LEN.pack(len(skey)) + skey
        return [_decode(v) for _, v in self.storage.scan(Family.HINTS, prefix, _next(prefix))]

    def store(self, skey: bytes, target: str, obj: Object, extra: list[Op] | None = None) -> None:
        """Merge `obj` into the hint for (skey, target); await `durable()` to ack."""
        hkey = hint_key(skey, target)
        raw = self.storage.get(Family.HINTS, hkey)
        merged = sync(_decode(raw), obj, lww=self.lww).obj
        ops = list(extra or [])
        ops.append((Family.HINTS, hkey, encode_object(merged)))
        self.storage.write(ops)
        self.commit.issued()
        if raw is None:
            self._pending += 1
        self.stats.stored += 1

    async def durable(self) -> None:
        await self.commit.barrier()

    def targets(self) -> set[str]:
        return {split_hint_key(k)[1] for k, _ in self.storage.scan(Family.HINTS)}

    async def deliver_once(
        self, deliver: Deliver, is_up: Callable[[str], bool], batch: int = 256
    ) -> int:
        """One pass over the stored hints; returns how many were delivered."""
        delivered = 0
        start = b""
        while True:
            items = self.storage.scan(Family.HINTS, start, None, batch)
            if not items:
                return delivered
            for hkey, value in items:
                skey, target = split_hint_key(hkey)
                if not is_up(target):
                    continue
                try:
                    ok = await deliver(target, skey, value)
                except Exception as exc:  # a failed delivery is retried next round
                    log.debug("hint for %s not delivered: %s", target, exc)
                    ok = False
                if not ok:
                    self.stats.failed += 1
                    continue
                if self.storage.get(Family.HINTS, hkey) == value:
                    self.storage.write([(Family.HINTS, hkey, None)])
                    self.commit.issued()
                    self._pending -= 1
                delivered += 1
                self.stats.delivered += 1
            if len(items) < batch:
                return delivered
            start = items[-1][0] + b"\x00"


def _decode(raw: bytes | None) -> Object:
    if raw is None:
        return Object()
    try:
        return decode_object(raw)
    except CodecError:
        log.error("corrupt hint ignored")
        return Object()


def _next(prefix: bytes) -> bytes:
    return prefix + b"\xff" * 8
