"""This node's replica of the data: read, coordinate a new version, merge a version.

Every mutation of an object is a read-modify-write done without an await in between
(so it is atomic on the event loop), written as one atomic batch, then made durable by
the group commit before the caller acknowledges anything.

Dots: this node is the actor of the versions it coordinates; the actor id is the node id
plus an incarnation drawn when its data directory was created, so a node that lost its
disk and comes back under the same name is a new actor. Counters come from a persistent,
monotonic per-actor counter handed out in fsynced leases (as Riak's vnode counter
lease), so a dot is never reused, even after this node dropped a key's data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dynamo_node.core.codec import (
    CodecError,
    decode_object,
    encode_object,
    single_version,
    supersedes,
    version_counter,
)
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import ObjectTooLarge, TooManySiblings
from dynamo_node.core.vclock import Dot, VClock
from dynamo_node.core.versions import Object, next_counter, sync, update
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.storage import Family, Op, Storage, partition_keys

log = logging.getLogger("dynamo.replica")

COUNTER_KEY = b"dot-counter-lease"
COUNTER_LEASE = 10_000
#: a key past `siblings_warn` is logged at most this often
SIBLINGS_LOG_INTERVAL_S = 60.0
#: keys remembered for that (forgotten all at once beyond this many)
SIBLINGS_LOG_KEYS = 4096

#: (storage key, old encoding or None, new encoding or None) after each change
ChangeListener = Callable[[bytes, bytes | None, bytes | None], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ReplicaStats:
    writes: int = 0
    merges: int = 0
    merges_changed: int = 0
    corrupt_objects: int = 0
    prune_suspects: int = 0
    #: client writes that left a key with more than `siblings_warn` siblings
    siblings_warned: int = 0
    #: client writes refused because they would add a sibling past `siblings_max`
    siblings_refused: int = 0
    #: client writes refused because the object would exceed `object_max_bytes`
    objects_too_large: int = 0


class Replica:
    def __init__(
        self,
        storage: Storage,
        commit: GroupCommit,
        actor: str,
        config: NodeConfig,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.storage = storage
        self.commit = commit
        self.actor = actor
        self.config = config
        self._clock_ms = clock_ms
        self.listeners: list[ChangeListener] = []
        #: called with a storage key whenever its object became all tombstones
        self.tombstone_listeners: list[Callable[[bytes], None]] = []
        self.stats = ReplicaStats()
        #: storage key -> when it was last logged for its siblings (time.monotonic)
        self._siblings_logged: dict[bytes, float] = {}
        raw = storage.get(Family.META, COUNTER_KEY)
        self._counter = int(raw.decode()) if raw else 0
        self._lease_end = self._counter

    # --- reads -------------------------------------------------------------------
    def read(self, skey: bytes) -> Object:
        raw = self.storage.get(Family.OBJECTS, skey)
        return self._decode(skey, raw)

    def read_encoded(self, skey: bytes) -> bytes | None:
        return self.storage.get(Family.OBJECTS, skey)

    def _decode(self, skey: bytes, raw: bytes | None) -> Object:
        if raw is None:
            return Object()
        try:
            return decode_object(raw)
        except CodecError:
            # never serve or propagate garbage; anti-entropy restores it from a peer
            self.stats.corrupt_objects += 1
            log.error("corrupt object at %r ignored", skey[:40])
            return Object()

    # --- writes ------------------------------------------------------------------
    def _reserve(self, counter: int) -> None:
        """Make sure `counter` is inside a lease that is on disk (fsynced) before any
        dot using it leaves this node, so a crash can never hand out a counter twice."""
        if counter <= self._lease_end:
            return
        self._lease_end = counter + COUNTER_LEASE
        self.storage.write([(Family.META, COUNTER_KEY, str(self._lease_end).encode())])
        self.storage.flush()
        self.storage.sync_wal()

    def new_version(
        self,
        current: Object,
        context: VClock,
        value: bytes | None,
        content_type: str,
        ops: list[Op],
        floor: int = 0,
        *,
        skey: bytes = b"",
    ) -> Object:
        """`current` with a new version coordinated by this node (a fresh dot, above
        `floor` too): a client write. Refused (TooManySiblings, ObjectTooLarge) when it
        would add a sibling past `siblings_max` or make the object larger than
        `object_max_bytes`; nothing is stored then. (Versions from peers are merged,
        never refused: they carry what a coordinator accepted.)"""
        if not self.config.lww:
            self._check_siblings(current, context)
        counter = next_counter(current, context, self.actor, max(self._counter, floor))
        self._reserve(counter)
        self._counter = counter
        new = self._update(current, context, counter, value, content_type)
        self._check_size(current, new)
        if len(new.siblings) > self.config.siblings_warn:
            self._warn_siblings(skey, len(new.siblings))
        return new

    def _check_siblings(self, current: Object, context: VClock) -> None:
        limit = self.config.siblings_max
        if len(current.siblings) < limit:
            return  # one more sibling is within the limit whatever the context covers
        survivors = sum(1 for s in current.siblings if not context.covers(s.dot))
        if survivors + 1 > limit and survivors == len(current.siblings):
            self.stats.siblings_refused += 1
            raise TooManySiblings(
                f"the key has {survivors} concurrent versions (siblings), the limit is "
                f"{limit}, and this write resolves none of them: read the key and write "
                "back with the context of that read to resolve them"
            )

    def _check_size(self, current: Object, new: Object) -> None:
        limit = self.config.object_max_bytes
        size = len(encode_object(new))  # kept by the object: stored and sent as it is
        if size <= limit or (not current.empty and size <= len(encode_object(current))):
            return  # within the limit, or no larger than what is stored already
        self.stats.objects_too_large += 1
        raise ObjectTooLarge(
            f"the object would be {size} bytes with its {len(new.siblings)} version(s), "
            f"the limit is {limit}: read the key and write back with the context of that "
            "read to resolve its siblings"
        )

    def _warn_siblings(self, skey: bytes, count: int) -> None:
        self.stats.siblings_warned += 1
        now = time.monotonic()
        last = self._siblings_logged.get(skey)
        if last is not None and now - last < SIBLINGS_LOG_INTERVAL_S:
            return
        if len(self._siblings_logged) >= SIBLINGS_LOG_KEYS:
            self._siblings_logged.clear()
        self._siblings_logged[skey] = now
        log.warning(
            "key %r has %d siblings (warning past %d, writes refused past %d): its "
            "clients write without the context of a read",
            skey[8:60],
            count,
            self.config.siblings_warn,
            self.config.siblings_max,
        )

    def _update(
        self,
        current: Object,
        context: VClock,
        counter: int,
        value: bytes | None,
        content_type: str,
    ) -> Object:
        return update(
            current,
            context,
            Dot(self.actor, counter),
            value,
            content_type,
            self._clock_ms(),
            lww=self.config.lww,
            max_entries=self.config.clock_max_entries,
            prune_min_age_ms=int(self.config.clock_prune_min_age_s * 1000),
        )

    def apply_put(
        self, skey: bytes, context: VClock, value: bytes | None, content_type: str
    ) -> Object:
        """Coordinate a put/delete on this replica (synchronously; then await durable())."""
        raw = self.storage.get(Family.OBJECTS, skey)
        stored = single_version(raw) if raw is not None and not self.config.lww else None
        floor = 0
        if stored is not None and context.covers(Dot(stored[0], stored[1])):
            # the put supersedes the one stored version (a read-modify-write): it takes no
            # part in the new object but its counter for this actor, read on the wire
            current = Object()
            floor = version_counter(stored, self.actor)
        else:
            current = self._decode(skey, raw)
        ops: list[Op] = []
        new = self.new_version(current, context, value, content_type, ops, floor, skey=skey)
        encoded = encode_object(new)
        ops.append((Family.OBJECTS, skey, encoded))
        self._write(ops, skey, raw, encoded)
        self.stats.writes += 1
        if value is None:
            self._tombstoned(skey)
        return new

    def merge_encoded(self, skey: bytes, data: bytes) -> bool:
        """Store a peer's encoded version when it simply supersedes the stored one (the
        usual replication write), without decoding either; False: not that case, call
        `apply_merge` with the decoded object."""
        raw = self.storage.get(Family.OBJECTS, skey)
        if raw is None:
            return False
        if raw == data:
            self.stats.merges += 1
            return True
        sibling = supersedes(data, raw)
        if sibling is None:
            return False
        self.stats.merges += 1
        self._write([(Family.OBJECTS, skey, data)], skey, raw, data)
        self.stats.merges_changed += 1
        if sibling[5] is None:  # a tombstone
            self._tombstoned(skey)
        return True

    def apply_merge(self, skey: bytes, incoming: Object) -> tuple[Object, bool]:
        """Merge a version from a peer; returns (result, whether anything changed)."""
        raw = self.storage.get(Family.OBJECTS, skey)
        self.stats.merges += 1
        if raw is not None and raw == incoming.wire_cache:
            return incoming, False  # this very version is stored already
        current = self._decode(skey, raw)
        result = sync(current, incoming, lww=self.config.lww)
        if result.prune_suspects:
            self.stats.prune_suspects += result.prune_suspects
            log.warning(
                "key %r: %d sibling(s) may be ancestors resurrected by clock pruning",
                skey[8:60],
                result.prune_suspects,
            )
        if result.obj == current and raw is not None:
            return current, False
        if result.obj.empty:
            return current, False
        encoded = encode_object(result.obj)
        if encoded == raw:
            return current, False
        self._write([(Family.OBJECTS, skey, encoded)], skey, raw, encoded)
        self.stats.merges_changed += 1
        if result.obj.all_tombstones():
            self._tombstoned(skey)
        return result.obj, True

    def remove(self, skey: bytes) -> None:
        """Drop a key outright (tombstone GC, after a partition moved away)."""
        raw = self.storage.get(Family.OBJECTS, skey)
        if raw is None:
            return
        self._write([(Family.OBJECTS, skey, None)], skey, raw, None)

    def drop_partition(self, p: int, partitions: int) -> bool:
        """Drop every object of partition p (of `partitions`), after it moved away: one
        seek to find whether its key range holds anything (a range already empty costs
        no range tombstone and no compaction), then one range delete of it
        (`Storage.delete_range`: O(1) here, the space reclaimed by a compaction in the
        background). The change listeners are not told (no key-by-key work): the
        caller forgets what it derived from the partition. Returns whether it held data."""
        start, end = partition_keys(p, partitions)
        if not self.storage.scan(Family.OBJECTS, start, end, 1):
            return False
        self.storage.delete_range(Family.OBJECTS, start, end)
        self.commit.issued()
        return True

    def _write(self, ops: list[Op], skey: bytes, old: bytes | None, new: bytes | None) -> None:
        self.storage.write(ops)
        self.commit.issued()
        for listener in self.listeners:
            listener(skey, old, new)

    def _tombstoned(self, skey: bytes) -> None:
        for listener in self.tombstone_listeners:
            listener(skey)

    async def durable(self) -> None:
        await self.commit.barrier()
