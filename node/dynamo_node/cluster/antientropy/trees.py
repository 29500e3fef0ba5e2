"""Keeping the Merkle tree of each partition current (`core.merkle.MerkleTree`).

A tree is built from one scan per partition, in the background once the node has a
ring (`prepare`), or at first use; after that a write only marks its segment stale
through the replica's change listener, and reading a tree (`tree`) rehashes its stale
segments from their key ranges. The same scan collects the keys that may be all
tombstones (the candidates of `tombstones`), kept current by the replica's tombstone
listener.

Saved trees: a clean stop (`Node.stop`, once nothing can write any more) saves every
built tree's leaves, key counts and stale segments, and the tombstone candidates of its
partition, one meta record per partition, then a marker naming what they are true of
(format, tree layout and shape, Q, node id and incarnation, a token the records carry),
all in one atomic write, synced. The next start trusts them only if the marker is there
and matches, and deletes the marker (synced) before anything can write: a crash after
that start leaves no marker, and the start after it builds every tree from a scan in the
background, as without saved trees. A loaded tree is current from the start: writes mark
segments stale as ever, and the segments that were stale at the stop are stale again.
A store write that fails (disk full) makes the trees of that run unsaveable; dropping a
partition (`discard`) deletes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.codec import all_tombstones
from dynamo_node.core.errors import InvalidRequest
from dynamo_node.core.merkle import LAYOUT, MerkleTree, item_digest
from dynamo_node.core.ring import partition_of, partition_range
from dynamo_node.store.durability import GroupCommit
from dynamo_node.store.replica import Replica
from dynamo_node.store.storage import Family, Op, Storage, hash_prefix, partition_keys

log = logging.getLogger("dynamo.antientropy")

SEGMENTS = 256
FANOUT = 16
#: how often the tree builder looks for the ring of a node that has none yet
PREPARE_POLL_S = 0.5
#: saved trees (see the module docstring): the meta records, one per partition (the
#: prefix and a 4-byte big-endian partition), and the marker that makes them trusted
SAVED_TREE_PREFIX = b"merkle-tree:"
SAVED_TREE_END = b"merkle-tree;"  # the first key past the records
SAVED_TREES_MARKER = b"merkle-saved"
#: the encoding of the marker and the records
SAVED_FORMAT = 1


def _record_key(p: int) -> bytes:
    return SAVED_TREE_PREFIX + p.to_bytes(4, "big")


class MerkleTrees:
    def __init__(
        self,
        view: ClusterView,
        storage: Storage,
        commit_log: GroupCommit,
        replica: Replica,
        actor: str,
    ) -> None:
        self.view = view
        self.storage = storage
        self.commit_log = commit_log
        #: this node's incarnation (saved trees are true of it only)
        self.actor = actor
        self.trees: dict[int, MerkleTree] = {}
        #: per partition, the segments written since its tree was last read
        self._stale: dict[int, set[int]] = {}
        #: per partition, keys that may be all tombstones (None: not scanned yet)
        self.tombstones: dict[int, set[bytes]] = {}
        #: a store write failed in this run: trees may hold what the store lost, unsaved
        self._tainted = False
        #: the trees were saved (the storage closes next): a write now voids the marker
        self._sealed = False
        #: partitions whose tree was loaded from a clean stop at this start
        self.loaded: set[int] = set()
        self._load_saved()
        storage.flush_hooks.append(self._on_flush)
        replica.listeners.append(self._on_change)
        replica.tombstone_listeners.append(self._on_tombstone)

    # --- trees -----------------------------------------------------------------------
    def _partitions(self) -> int:
        return self.view.require_state().partitions

    def check_partition(self, p: Any) -> int:
        """p, if it is a partition of the ring (a peer's argument), else InvalidRequest."""
        if not isinstance(p, int) or not 0 <= p < self._partitions():
            raise InvalidRequest("bad partition")
        return p

    def _partition_of_skey(self, skey: bytes) -> int:
        return partition_of(int.from_bytes(skey[:8], "big"), self._partitions())

    def _on_change(self, skey: bytes, old: bytes | None, new: bytes | None) -> None:
        """A write marks its segment stale, nothing more: hashing every write (both
        versions, ~1 KiB each) cost a replica ~10 us per write; the next read of the
        tree rehashes its stale segments from their key ranges, once per segment
        however many writes it took."""
        if self._sealed:
            self._unseal()
        state = self.view.state
        if not self.trees or state is None:
            return  # no tree built yet
        p = partition_of(int.from_bytes(skey[:8]), state.partitions)
        tree = self.trees.get(p)
        if tree is not None:
            stale = self._stale.get(p)
            if stale is None:
                self._stale[p] = {tree.segment_of(skey)}
            else:
                stale.add(tree.segment_of(skey))

    def _on_tombstone(self, skey: bytes) -> None:
        if self.view.state is None:
            return
        known = self.tombstones.get(self._partition_of_skey(skey))
        if known is not None:
            known.add(skey)

    def tombstone_candidates(self, p: int) -> set[bytes]:
        known = self.tombstones.get(p)
        if known is None:
            self._scan(p)
            known = self.tombstones[p]
        return known

    def tree(self, p: int) -> MerkleTree:
        """p's tree, current: built on first use, its stale segments rehashed."""
        tree = self.trees.get(p)
        if tree is None:
            self._scan(p)
            return self.trees[p]
        stale = self._stale.pop(p, None)
        if stale:
            items: dict[int, list[bytes]] = {segment: [] for segment in stale}
            for skey, raw in self._read_segments(p, tree, stale):
                items[tree.segment_of(skey)].append(item_digest(skey, raw))
            for segment, found in items.items():
                tree.set_segment(segment, found)
        return tree

    def discard(self, p: int) -> None:
        """Forget p's tree and tombstone candidates (its data was dropped): built again
        from the store, empty, if this node ever holds p again."""
        self.trees.pop(p, None)
        self._stale.pop(p, None)
        self.tombstones.pop(p, None)
        self.loaded.discard(p)
        # only the marker of a clean stop makes a record trusted, and the next stop
        # rewrites them all; deleted anyway, so that no record outlives its data
        with contextlib.suppress(Exception):  # a failed store: nothing to trust next time
            self.storage.write([(Family.META, _record_key(p), None)])
            self.commit_log.issued()
        if self._sealed:
            self._unseal()

    # --- saved trees -------------------------------------------------------------------
    def _on_flush(self, exc: BaseException | None) -> None:
        if exc is not None:
            # the grouped writes were lost, but their segments may have been rehashed
            # from the overlay meanwhile: this run's trees are not saved
            self._tainted = True

    def _unseal(self) -> None:
        """A write after `save` (none is expected): the saved trees do not have it."""
        log.warning("a write after the Merkle trees were saved: they are rebuilt next start")
        self._sealed = False
        with contextlib.suppress(Exception):
            self.storage.write([(Family.META, SAVED_TREES_MARKER, None)])

    def _expected_marker(self) -> dict[str, Any] | None:
        state = self.view.state
        if state is None:
            return None
        return {
            "format": SAVED_FORMAT,
            "layout": LAYOUT,
            "segments": SEGMENTS,
            "fanout": FANOUT,
            "partitions": state.partitions,
            "node": self.view.node_id,
            "actor": self.actor,
        }

    def _load_saved(self) -> None:
        """Load the trees a clean stop saved, if its marker matches this node and code;
        called before the node can apply any write (from `Node.__init__`)."""
        storage = self.storage
        raw = storage.get(Family.META, SAVED_TREES_MARKER)
        if raw is None:
            return  # a first start, a crash, or a stop that could not save: built by scans
        # the saved trees are true of the store as it is now, not after the next write:
        # the marker goes first, durably, so that a crash of this run leaves none
        storage.write([(Family.META, SAVED_TREES_MARKER, None)])
        storage.sync_wal()
        try:
            trees, stale, tombstones = self._read_saved(storage, raw)
        except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
            log.warning("saved Merkle trees unusable (%s): building them from the store", exc)
            return
        self.trees.update(trees)
        self._stale.update(stale)
        self.tombstones.update(tombstones)
        self.loaded = set(trees)
        log.info("loaded the saved Merkle trees of %d partition(s)", len(trees))

    def _read_saved(
        self, storage: Storage, raw: bytes
    ) -> tuple[dict[int, MerkleTree], dict[int, set[int]], dict[int, set[bytes]]]:
        """The saved trees, stale segments and tombstone candidates; raises ValueError if
        anything does not match (all or none are used)."""
        marker = msgpack.unpackb(raw, raw=False)
        if not isinstance(marker, dict):
            raise ValueError("marker is not a map")
        expected = self._expected_marker()
        if expected is None:
            raise ValueError("no ring known at start")
        for name, want in expected.items():
            if marker.get(name) != want:
                raise ValueError(f"saved {name} {marker.get(name)!r}, now {want!r}")
        token = marker["token"]
        partitions = expected["partitions"]
        prefix_bits = partitions.bit_length() - 1
        trees: dict[int, MerkleTree] = {}
        stale: dict[int, set[int]] = {}
        tombstones: dict[int, set[bytes]] = {}
        for p in marker["saved"]:
            if not isinstance(p, int) or not 0 <= p < partitions or p in trees:
                raise ValueError(f"bad partition {p!r}")
            record = storage.get(Family.META, _record_key(p))
            if record is None:
                raise ValueError(f"partition {p}: no record")
            saved_token, saved_p, leaves, counts, segments, candidates = msgpack.unpackb(record)
            if saved_token != token or saved_p != p:
                raise ValueError(f"partition {p}: a record of another save")
            trees[p] = MerkleTree.from_leaves(
                leaves, counts, segments=SEGMENTS, fanout=FANOUT, prefix_bits=prefix_bits
            )
            if any(not isinstance(s, int) or not 0 <= s < SEGMENTS for s in segments):
                raise ValueError(f"partition {p}: bad stale segment")
            if segments:
                stale[p] = set(segments)
            known = {bytes(k) for k in candidates}
            if any(partition_of(int.from_bytes(k[:8]), partitions) != p for k in known):
                raise ValueError(f"partition {p}: a tombstone candidate of another partition")
            tombstones[p] = known
        return trees, stale, tombstones

    def save(self) -> bool:
        """Save every built tree (leaves, counts, stale segments) and tombstone candidate
        set, then the marker that makes them trusted, in one atomic write, synced.

        `Node.stop` calls it last, right before the storage closes, with no await in
        between: nothing can write after it. Saves nothing (the next start builds the
        trees by scans) if a store write failed in this run or the storage is failed."""
        storage = self.storage
        expected = self._expected_marker()
        if self._tainted or expected is None:
            return False
        if storage.failure is not None or self.commit_log.failed is not None:
            return False
        try:
            storage.flush()  # the grouped writes first (they are in the trees already)
            if storage.failure is not None:
                return False
            saved = sorted(p for p in self.trees if p in self.tombstones)
            token = uuid.uuid4().hex
            ops: list[Op] = [
                (Family.META, key, None)
                for key, _ in storage.scan(Family.META, SAVED_TREE_PREFIX, SAVED_TREE_END)
            ]
            for p in saved:
                leaves, counts = self.trees[p].leaf_state()
                record = [
                    token,
                    p,
                    leaves,
                    counts,
                    sorted(self._stale.get(p, ())),
                    sorted(self.tombstones[p]),
                ]
                ops.append((Family.META, _record_key(p), msgpack.packb(record)))
            marker = {**expected, "token": token, "saved": saved}
            ops.append((Family.META, SAVED_TREES_MARKER, msgpack.packb(marker)))
            storage.write(ops)  # one batch: the marker never lands without its records
            storage.flush()
            if storage.failure is not None:
                return False
            storage.sync_wal()
        except Exception as exc:
            log.warning("saving the Merkle trees failed (%s): built again next start", exc)
            return False
        self._sealed = True
        log.info("saved the Merkle trees of %d partition(s)", len(saved))
        return True

    def _scan(self, p: int) -> None:
        """Build p's tree and its tombstone candidates from one scan of the partition,
        without an await: the writes made meanwhile find them in place and keep them
        current (`_on_change`, `_on_tombstone`)."""
        partitions = self._partitions()
        start, end = partition_keys(p, partitions)
        items: list[tuple[bytes, bytes]] = []
        tombstones: set[bytes] = set()
        for skey, raw in self.storage.iter_range(Family.OBJECTS, start, end):
            items.append((skey, item_digest(skey, raw)))
            if all_tombstones(raw):
                tombstones.add(skey)
        if p not in self.trees:
            self.trees[p] = MerkleTree.build(
                items, segments=SEGMENTS, fanout=FANOUT, prefix_bits=partitions.bit_length() - 1
            )
            self._stale.pop(p, None)
        self.tombstones.setdefault(p, tombstones)

    async def prepare(self) -> None:
        """Build every partition's tree in the background as soon as the node has a
        ring, one partition per loop iteration, so that no exchange has to: a node's
        first pass used to scan and hash all its data at once, and the requests of
        that moment waited behind it. From then on writes only mark segments stale."""
        while self.view.state is None:  # noqa: ASYNC110 - a ring arrives by gossip or join: no event
            await asyncio.sleep(PREPARE_POLL_S)
        for p in range(self._partitions()):
            if p not in self.trees or p not in self.tombstones:
                self._scan(p)
            await asyncio.sleep(0)

    def segment_items(self, p: int, segments: set[int]) -> dict[bytes, bytes]:
        """khash -> item of the keys in `segments` of p, read from the store."""
        tree = self.tree(p)
        if any(not 0 <= s < tree.segments for s in segments):
            raise InvalidRequest("bad segment")
        return {k: item_digest(k, v) for k, v in self._read_segments(p, tree, segments)}

    def _read_segments(
        self, p: int, tree: MerkleTree, segments: set[int]
    ) -> Iterator[tuple[bytes, bytes]]:
        """The stored (key, bytes) of `segments` of p: each segment is a key range of its
        own (`MerkleTree.segment_span`), so only those ranges are read, one scan per
        run of adjacent segments."""
        base, _ = partition_range(p, self._partitions())
        runs: list[list[int]] = []  # [first, last] of each run of adjacent segments
        for segment in sorted(segments):
            if runs and runs[-1][1] == segment - 1:
                runs[-1][1] = segment
            else:
                runs.append([segment, segment])
        for first, last in runs:
            lo, hi = base + tree.segment_span(first)[0], base + tree.segment_span(last)[1]
            end = hash_prefix(hi) if hi < 1 << 64 else None
            yield from self.storage.iter_range(Family.OBJECTS, hash_prefix(lo), end)
