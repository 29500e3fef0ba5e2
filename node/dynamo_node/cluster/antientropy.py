"""Merkle-tree anti-entropy between the replicas of each partition, and tombstone GC.

State (`merkle.MerkleTree`, one per partition) is built from one scan per partition, in
the background once the node has a ring (or at first use); after that a write only
marks its segment stale through the replica's change listener, and reading a tree
rehashes its stale segments from their key ranges. The exchange protocol (this module)
compares the roots of many partitions in one call, descends only into differing subtrees
(`merkle.adiff_segments`), lists the keys of differing segments only, and ships only
the differing objects, both ways; both sides end with the merge of both versions, so
one exchange makes a pair of replicas identical. Traffic therefore grows with the
number of differences, not with the data size (bench/antientropy.py measures it).

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

Tombstone GC: a key whose every sibling is a tombstone older than the grace period is
purged only when every replica of its partition is up and holds the very same object
(same digest); each replica then deletes it with a compare-and-delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from dynamo_node.core.codec import CodecError, all_tombstones, decode_object, digest
from dynamo_node.core.errors import InvalidRequest, PeerError
from dynamo_node.core.merkle import LAYOUT, MerkleTree, adiff_segments, diff_keys, item_digest
from dynamo_node.core.ring import partition_of, partition_range
from dynamo_node.store.storage import Family, Op, hash_prefix, partition_keys

if TYPE_CHECKING:
    from dynamo_node.node import Node
    from dynamo_node.store.storage import Storage

log = logging.getLogger("dynamo.antientropy")

#: exchange rounds per pass: the second spreads what the last peers of the first brought
ROUNDS = 2
#: the calls that exchange trees carry the tree layout in their names: nodes of two
#: layouts (during a rolling upgrade) refuse each other's exchanges instead of seeing
#: every key differ
ROOTS, HASHES, KEYS = (f"ae_{name}.{LAYOUT}" for name in ("roots", "hashes", "keys"))
SEGMENTS = 256
FANOUT = 16
SHIP_BATCH = 500
#: how often the tree builder looks for the ring of a node that has none yet
PREPARE_POLL_S = 0.5
GC_BATCH = 200
#: saved trees (see the module docstring): the meta records, one per partition (the
#: prefix and a 4-byte big-endian partition), and the marker that makes them trusted
SAVED_TREE_PREFIX = b"merkle-tree:"
SAVED_TREE_END = b"merkle-tree;"  # the first key past the records
SAVED_TREES_MARKER = b"merkle-saved"
#: the encoding of the marker and the records
SAVED_FORMAT = 1


def _record_key(p: int) -> bytes:
    return SAVED_TREE_PREFIX + p.to_bytes(4, "big")


@dataclass(slots=True)
class Job:
    id: str
    kind: str = "anti-entropy"
    state: str = "running"
    partitions_total: int = 0
    partitions_done: int = 0
    keys_repaired: int = 0
    tombstones_purged: int = 0
    bytes_exchanged: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        total = self.partitions_total or 1
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.partitions_done / total, 4),
            "keys_repaired": self.keys_repaired,
            "tombstones_purged": self.tombstones_purged,
            "bytes_exchanged": self.bytes_exchanged,
            "partitions_done": self.partitions_done,
            "partitions_total": self.partitions_total,
            "errors": self.errors[-10:],
            "started": _iso(self.started),
            "finished": _iso(self.finished) if self.finished else None,
        }


@dataclass(slots=True)
class AEStats:
    exchanges: int = 0
    keys_repaired: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    tombstones_purged: int = 0


class _RemoteTree:
    def __init__(self, ae: AntiEntropy, peer: str, p: int) -> None:
        self._ae, self._peer, self._p = ae, peer, p

    async def hashes(self, level: int, indices: list[int] | Any) -> list[bytes]:
        result = await self._ae.call(self._peer, HASHES, [self._p, level, list(indices)])
        return [bytes(h) for h in result]


class AntiEntropy:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.trees: dict[int, MerkleTree] = {}
        #: per partition, the segments written since its tree was last read
        self._stale: dict[int, set[int]] = {}
        #: per partition, keys that may be all tombstones (None: not scanned yet)
        self.tombstones: dict[int, set[bytes]] = {}
        self.stats = AEStats()
        self.jobs: dict[str, Job] = {}
        self._task: asyncio.Task[None] | None = None
        self._prepared: asyncio.Task[None] | None = None
        self._job_tasks: set[asyncio.Task[None]] = set()
        #: a store write failed in this run: trees may hold what the store lost, unsaved
        self._tainted = False
        #: the trees were saved (the storage closes next): a write now voids the marker
        self._sealed = False
        #: partitions whose tree was loaded from a clean stop at this start
        self.loaded: set[int] = set()
        self._load_saved()
        node.storage.flush_hooks.append(self._on_flush)
        node.replica.listeners.append(self._on_change)
        node.replica.tombstone_listeners.append(self._on_tombstone)
        node.rpc_handlers.update(
            {
                ROOTS: self._rpc_roots,
                HASHES: self._rpc_hashes,
                KEYS: self._rpc_keys,
                "ae_fetch": self._rpc_fetch,
                "ae_partition": self._rpc_partition,
                "ae_digests": self._rpc_digests,
                "ae_gc": self._rpc_gc,
            }
        )

    # --- trees -----------------------------------------------------------------------
    def _partitions(self) -> int:
        return self.node.require_state().partitions

    def _partition_of_skey(self, skey: bytes) -> int:
        return partition_of(int.from_bytes(skey[:8], "big"), self._partitions())

    def _on_change(self, skey: bytes, old: bytes | None, new: bytes | None) -> None:
        """A write marks its segment stale, nothing more: hashing every write (both
        versions, ~1 KiB each) cost a replica ~10 us per write; the next read of the
        tree rehashes its stale segments from their key ranges, once per segment
        however many writes it took."""
        if self._sealed:
            self._unseal()
        state = self.node.state
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
        if self.node.state is None:
            return
        known = self.tombstones.get(self._partition_of_skey(skey))
        if known is not None:
            known.add(skey)

    def _tombstone_candidates(self, p: int) -> set[bytes]:
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
            self.node.storage.write([(Family.META, _record_key(p), None)])
            self.node.commit_log.issued()
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
            self.node.storage.write([(Family.META, SAVED_TREES_MARKER, None)])

    def _expected_marker(self) -> dict[str, Any] | None:
        state = self.node.state
        if state is None:
            return None
        return {
            "format": SAVED_FORMAT,
            "layout": LAYOUT,
            "segments": SEGMENTS,
            "fanout": FANOUT,
            "partitions": state.partitions,
            "node": self.node.node_id,
            "actor": self.node.actor,
        }

    def _load_saved(self) -> None:
        """Load the trees a clean stop saved, if its marker matches this node and code;
        called before the node can apply any write (from `Node.__init__`)."""
        storage = self.node.storage
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
        node, storage = self.node, self.node.storage
        expected = self._expected_marker()
        if self._tainted or expected is None:
            return False
        if storage.failure is not None or node.commit_log.failed is not None:
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
        for skey, raw in self.node.storage.iter_range(Family.OBJECTS, start, end):
            items.append((skey, item_digest(skey, raw)))
            if all_tombstones(raw):
                tombstones.add(skey)
        if p not in self.trees:
            self.trees[p] = MerkleTree.build(
                items, segments=SEGMENTS, fanout=FANOUT, prefix_bits=partitions.bit_length() - 1
            )
            self._stale.pop(p, None)
        self.tombstones.setdefault(p, tombstones)

    async def _prepare(self) -> None:
        """Build every partition's tree in the background as soon as the node has a
        ring, one partition per loop iteration, so that no exchange has to: a node's
        first pass used to scan and hash all its data at once, and the requests of
        that moment waited behind it. From then on writes only mark segments stale."""
        while self.node.state is None:  # noqa: ASYNC110 - a ring arrives by gossip or join: no event
            await asyncio.sleep(PREPARE_POLL_S)
        for p in range(self._partitions()):
            if p not in self.trees or p not in self.tombstones:
                self._scan(p)
            await asyncio.sleep(0)

    def _segment_items(self, p: int, segments: set[int]) -> dict[bytes, bytes]:
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
            yield from self.node.storage.iter_range(Family.OBJECTS, hash_prefix(lo), end)

    # --- calls with byte accounting ---------------------------------------------------------
    async def call(self, peer: str, method: str, args: Any) -> Any:
        sent = len(msgpack.packb(args, use_bin_type=True))
        timeout = max(10.0, self.node.config.request_timeout_ms / 1000)
        result = await self.node.transport.call(peer, method, args, timeout)
        received = len(msgpack.packb(result, use_bin_type=True))
        self.stats.bytes_sent += sent
        self.stats.bytes_received += received
        return result

    # --- the exchange ---------------------------------------------------------------------
    async def exchange(self, p: int, peer: str) -> int:
        """Make this node's replica of p and peer's identical; returns keys repaired."""
        self.stats.exchanges += 1
        local = self.tree(p)
        (root,) = await self.call(peer, ROOTS, [[p]])
        if bytes(root) == local.root():
            return 0
        segments, _ = await adiff_segments(local, _RemoteTree(self, peer, p))
        if not segments:
            return 0
        wanted = set(segments)
        local_items = self._segment_items(p, wanted)
        remote_items = {bytes(k): bytes(d) for k, d in await self.call(peer, KEYS, [p, segments])}
        only_local, only_remote, differing = diff_keys(local_items, remote_items)
        push = [*only_local, *differing]
        pull = [*only_remote, *differing]
        for i in range(0, len(push), SHIP_BATCH):
            batch = []
            for skey in push[i : i + SHIP_BATCH]:
                raw = self.node.replica.read_encoded(skey)
                if raw is not None:
                    batch.append([skey, raw])
            if batch:
                await self.call(peer, "merge_many", batch)
        for i in range(0, len(pull), SHIP_BATCH):
            fetched = await self.call(peer, "ae_fetch", [pull[i : i + SHIP_BATCH]])
            for skey, raw in fetched:
                if raw is None:
                    continue
                try:
                    obj = decode_object(raw)
                except CodecError:
                    continue
                self.node.replica.apply_merge(bytes(skey), obj)
        await self.node.commit_log.barrier()
        repaired = len(set(push) | set(pull))
        self.stats.keys_repaired += repaired
        if repaired:
            log.info("anti-entropy repaired %d key(s) of partition %d with %s", repaired, p, peer)
        return repaired

    async def sync_partition(self, p: int) -> tuple[int, int]:
        """Exchange p with every other live replica; then GC its agreed tombstones."""
        state = self.node.require_state()
        peers = [
            r for r in state.preference_list(p) if r != self.node.node_id and self.node.is_up(r)
        ]
        repaired = 0
        # this node gathers everything in the first round; a second round hands what a
        # later peer brought to the earlier ones (only needed when that round repaired)
        for _ in range(ROUNDS):
            this_round = 0
            for peer in peers:
                this_round += await self.exchange(p, peer)
            repaired += this_round
            if not this_round or len(peers) < 2:
                break
        purged = await self.collect_tombstones(p)
        return repaired, purged

    # --- tombstone GC -------------------------------------------------------------------------
    async def collect_tombstones(self, p: int) -> int:

        state = self.node.require_state()
        replicas = state.preference_list(p)
        if self.node.node_id not in replicas or not all(self.node.is_up(r) for r in replicas):
            return 0
        grace_ms = int(self.node.config.tombstone_grace_s * 1000)
        now_ms = time.time_ns() // 1_000_000
        known = self._tombstone_candidates(p)
        candidates: list[tuple[bytes, bytes]] = []
        for skey in sorted(known):
            raw = self.node.replica.read_encoded(skey)
            try:
                obj = decode_object(raw) if raw is not None else None
            except CodecError:
                obj = None
            if obj is None or not obj.all_tombstones():
                known.discard(skey)  # purged, or written again since
                continue
            if now_ms - obj.max_timestamp() >= grace_ms:
                candidates.append((skey, digest(raw)))  # type: ignore[arg-type]
        purged = 0
        peers = [r for r in replicas if r != self.node.node_id]
        for i in range(0, len(candidates), GC_BATCH):
            batch = candidates[i : i + GC_BATCH]
            keys = [k for k, _ in batch]
            agreed = set(keys)
            for peer in peers:
                digests = await self.call(peer, "ae_digests", [keys])
                agreed &= {
                    k
                    for (k, d), theirs in zip(batch, digests, strict=True)
                    if theirs is not None and bytes(theirs) == d
                }
            final = [[k, d] for k, d in batch if k in agreed]
            if not final:
                continue
            for peer in peers:
                await self.call(peer, "ae_gc", [final])
            purged += self._gc_local(final)
        self.stats.tombstones_purged += purged
        return purged

    def _gc_local(self, items: list[list[bytes]] | list[Any]) -> int:
        purged = 0
        for skey, want in items:
            raw = self.node.replica.read_encoded(bytes(skey))
            if raw is not None and digest(raw) == bytes(want):
                self.node.replica.remove(bytes(skey))
                purged += 1
        return purged

    # --- server side ---------------------------------------------------------------------
    def _check_p(self, p: Any) -> int:
        if not isinstance(p, int) or not 0 <= p < self._partitions():
            raise InvalidRequest("bad partition")
        return p

    async def _rpc_roots(self, args: Any, caller: str) -> list[bytes]:
        roots = []
        for p in args[0]:
            roots.append(self.tree(self._check_p(p)).root())
            # a tree read rehashes the segments written since the last one (a whole
            # partition's after a minute of writes): requests get the loop in between
            await asyncio.sleep(0)
        return roots

    async def _rpc_hashes(self, args: Any, caller: str) -> list[bytes]:
        p, level, indices = args
        return self.tree(self._check_p(p)).hashes(int(level), [int(i) for i in indices])

    async def _rpc_keys(self, args: Any, caller: str) -> list[list[bytes]]:
        p, segments = args
        items = self._segment_items(self._check_p(p), {int(s) for s in segments})
        return [[k, d] for k, d in items.items()]

    async def _rpc_fetch(self, args: Any, caller: str) -> list[list[Any]]:
        return [[skey, self.node.replica.read_encoded(bytes(skey))] for skey in args[0]]

    async def _rpc_digests(self, args: Any, caller: str) -> list[bytes | None]:
        out: list[bytes | None] = []
        for skey in args[0]:
            raw = self.node.replica.read_encoded(bytes(skey))
            out.append(digest(raw) if raw is not None else None)
        return out

    async def _rpc_gc(self, args: Any, caller: str) -> int:
        purged = self._gc_local(args[0])
        await self.node.commit_log.barrier()
        return purged

    async def _rpc_partition(self, args: Any, caller: str) -> list[int]:
        repaired, purged = await self.sync_partition(self._check_p(args[0]))
        return [repaired, purged]

    # --- jobs and the periodic pass --------------------------------------------------------
    def start_job(self) -> str:
        job = Job(uuid.uuid4().hex[:16])
        self.jobs[job.id] = job
        task = asyncio.create_task(self._run_job(job))
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)
        return job.id

    async def _differing(self, peer: str, partitions: list[int]) -> list[int]:
        """The partitions among `partitions` whose roots differ on `peer` (one call)."""
        roots = await self.call(peer, ROOTS, [partitions])
        differing = []
        for p, root in zip(partitions, roots, strict=True):
            if bytes(root) != self.tree(p).root():
                differing.append(p)
            await asyncio.sleep(0)  # see _rpc_roots
        return differing

    async def _run_job(self, job: Job) -> None:
        state = self.node.require_state()
        job.partitions_total = state.partitions
        before = self.stats.bytes_sent + self.stats.bytes_received
        me = self.node.node_id
        try:
            mine = [p for p in range(state.partitions) if me in state.preference_list(p)]
            # compare every shared partition's root with each peer in one call per peer
            peers = sorted({r for p in mine for r in state.preference_list(p) if r != me})
            down = [peer for peer in peers if not self.node.is_up(peer)]
            job.errors.extend(f"replica {peer} is down" for peer in down)
            live = [peer for peer in peers if peer not in down]
            # round 1 gathers every replica's data here; round 2 (only when a later
            # exchange of round 1 repaired something) hands it back to the earlier peers
            for _ in range(ROUNDS):
                repaired = 0
                for peer in live:
                    shared = [p for p in mine if peer in state.preference_list(p)]
                    try:
                        for p in await self._differing(peer, shared):
                            repaired += await self.exchange(p, peer)
                    except Exception as exc:  # one peer failing does not stop the pass
                        job.errors.append(f"{peer}: {exc}")
                job.keys_repaired += repaired
                if not repaired or len(live) < 2:
                    break
            for p in mine:
                try:
                    job.tombstones_purged += await self.collect_tombstones(p)
                except Exception as exc:
                    job.errors.append(f"partition {p}: {exc}")
                job.partitions_done += 1
                job.bytes_exchanged = self.stats.bytes_sent + self.stats.bytes_received - before
            # partitions this node does not hold: their first live replica does them
            for p in range(state.partitions):
                if p in mine:
                    continue
                replicas = state.preference_list(p)
                delegate = next((r for r in replicas if self.node.is_up(r)), None)
                try:
                    if delegate is None:
                        raise PeerError(f"no live replica of partition {p}")
                    repaired, purged = await self.call(delegate, "ae_partition", [p])
                    job.keys_repaired += int(repaired)
                    job.tombstones_purged += int(purged)
                except Exception as exc:
                    job.errors.append(f"partition {p}: {exc}")
                job.partitions_done += 1
                job.bytes_exchanged = self.stats.bytes_sent + self.stats.bytes_received - before
            job.state = "done" if not job.errors else "failed"
        except Exception as exc:
            job.state = "failed"
            job.errors.append(str(exc))
        finally:
            job.bytes_exchanged = self.stats.bytes_sent + self.stats.bytes_received - before
            job.finished = time.time()
            if job.state == "done":
                self.node.last_anti_entropy = job.finished
            log.info(
                "anti-entropy job %s %s: %d key(s) repaired, %d tombstone(s) purged",
                job.id,
                job.state,
                job.keys_repaired,
                job.tombstones_purged,
            )

    def start(self) -> None:
        if self.node.config.anti_entropy_interval_s > 0:  # 0 disables the periodic rounds
            self._task = asyncio.create_task(self._loop(), name="anti-entropy")
            self._prepared = asyncio.create_task(self._prepare(), name="merkle-trees")

    async def stop(self) -> None:
        for task in [self._task, self._prepared, *self._job_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self) -> None:
        interval = self.node.config.anti_entropy_interval_s
        while True:
            await asyncio.sleep(interval)
            state = self.node.state
            if state is None or interval <= 0:
                continue
            try:
                job = Job("periodic", kind="periodic")
                await self._run_job(job)
                if job.errors:
                    log.info("periodic anti-entropy: %s", "; ".join(job.errors[:3]))
            except Exception as exc:
                log.warning("periodic anti-entropy round failed: %s", exc)

    def counters(self) -> dict[str, float]:
        s = self.stats
        return {
            "anti_entropy_exchanges_total": s.exchanges,
            "anti_entropy_keys_repaired_total": s.keys_repaired,
            "anti_entropy_bytes_sent_total": s.bytes_sent,
            "anti_entropy_bytes_received_total": s.bytes_received,
            "tombstones_purged_total": s.tombstones_purged,
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
